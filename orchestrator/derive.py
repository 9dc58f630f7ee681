"""`derived:` values — small arithmetic expressions over a trial's config, e.g.
`steps: "int(20 * n_params / tokens_per_step)"`.

Python's `eval` is unsafe on user files and `ast.literal_eval` cannot do arithmetic or call
helpers, so we walk the parsed AST ourselves and allow only numbers, names, + - * / // % **,
unary minus and calls of a fixed set of helpers.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

from trainer.config import TrainConfig
from trainer.estimate import estimate

from .problems import brief, closest

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "round": round, "int": int, "float": float, "abs": abs,
    "log2": math.log2, "log": math.log, "sqrt": math.sqrt, "exp": math.exp,
    "ceil": math.ceil, "floor": math.floor,
}
# Quantities computed from the whole config (not fields themselves): the trainer's estimate,
# and the config's own properties.
HELPERS: dict[str, Callable[[TrainConfig], Any]] = {
    "n_params": lambda cfg: estimate(cfg)["n_params"],
    "n_params_nonembedding": lambda cfg: estimate(cfg)["n_params_nonembedding"],
    **{name: operator.attrgetter(name)
       for name in ("n_heads", "tokens_per_step", "width_mult", "depth_mult", "mlp_hidden")},
}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
          ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_EXPONENT = 64  # `10 ** 10 ** 10` would hang the process
MAX_INT_BITS = 4096
MAX_LENGTH = 1000  # characters of one expression
MAX_DEPTH = 30     # nesting of operations (`1 + 1 + ... + 1` nests once per `+`)


class ExpressionError(ValueError):
    """A derived expression that is not allowed or cannot be evaluated (message says why)."""


def allowed_names() -> list[str]:
    return sorted(set(TrainConfig.model_fields) | set(HELPERS) | set(FUNCTIONS))


def parse_expression(text: str) -> ast.Expression:
    """Parse and check an expression once, at load time, so mistakes show before any run."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expected a non-empty expression string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"not a valid expression ({err.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("not a valid expression") from None
    if _depth(tree.body) > MAX_DEPTH:
        raise ExpressionError(f"the expression nests more than {MAX_DEPTH} operations deep; "
                              "split it into several derived keys or simplify it")
    _check(tree.body)
    return tree


def _depth(root: ast.AST) -> int:
    """Nesting depth, without recursion (the tree may be thousands deep)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def names_used(tree: ast.Expression) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def evaluate(tree: ast.Expression, cfg: TrainConfig) -> Any:
    """Value of a checked expression for one config (`cfg` may be unvalidated)."""
    try:
        return _eval(tree.body, cfg)
    except ExpressionError:
        raise
    except ZeroDivisionError:
        raise ExpressionError("division by zero") from None
    except (ValueError, TypeError, OverflowError) as err:
        raise ExpressionError(brief(str(err))) from None
    except RecursionError:  # parse_expression bounds the depth; kept as a guard
        raise ExpressionError("the expression nests too deeply") from None


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"only numbers are allowed as constants, not {brief(node.value)}")
    elif isinstance(node, ast.Name):
        if node.id not in TrainConfig.model_fields and node.id not in HELPERS:
            raise ExpressionError(_unknown(node.id))
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        _check(node.operand)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"unknown function '{name}'; allowed: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExpressionError(f"{node.func.id}(): keyword arguments are not allowed")
        for arg in node.args:
            _check(arg)
    else:
        raise ExpressionError(
            f"'{ast.unparse(node)}' is not allowed; use numbers, config keys, helpers "
            f"({', '.join(HELPERS)}), + - * / // % ** and the functions {', '.join(sorted(FUNCTIONS))}")


def _unknown(name: str) -> str:
    close = closest(name, allowed_names())
    hint = f"; did you mean '{close}'?" if close else f"; helpers are {', '.join(HELPERS)}"
    return f"unknown name '{name}' (not a config key or helper){hint}"


def _too_big_power(left: Any, right: Any) -> bool:
    if not isinstance(right, (int, float)) or abs(right) > MAX_EXPONENT:
        return True
    # integer powers are exact and unbounded: (10 ** 64) ** 64 ** ... would never finish
    return isinstance(left, int) and left.bit_length() * abs(right) > MAX_INT_BITS


def _eval(node: ast.AST, cfg: TrainConfig) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in HELPERS:
            return HELPERS[node.id](cfg)
        value = getattr(cfg, node.id)
        if not isinstance(value, (int, float)):  # strings would allow `corpus * 10**9`
            raise ExpressionError(f"'{node.id}' is {brief(value)}, not a number")
        return value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, cfg), _eval(node.right, cfg)
        if isinstance(node.op, ast.Pow) and _too_big_power(left, right):
            raise ExpressionError(f"{left} ** {right} is too large")
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_eval(node.operand, cfg))
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_eval(a, cfg) for a in node.args))
    raise ExpressionError(f"'{ast.unparse(node)}' is not allowed")  # _check rules this out
