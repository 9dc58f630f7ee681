"""`search.space` entries → Optuna distributions (what Ray Tune's OptunaSearch takes as `space`).

File syntax, one key each: `{log_uniform: [lo, hi]}`, `{uniform: [lo, hi]}`, `{int: [lo, hi]}`,
`{categorical: [a, b, ...]}`.
"""
from __future__ import annotations

import math
from typing import Any

from trainer.errors import brief

from .spec_schema import DISTRIBUTIONS


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_distribution(entry: Any) -> str | None:
    """None when `entry` is a valid distribution, else what is wrong and what is allowed."""
    allowed = "expected one of " + ", ".join(f"{{{d}: [...]}}" for d in DISTRIBUTIONS)
    if not isinstance(entry, dict) or len(entry) != 1:
        return f"{allowed}, got {brief(entry)}"
    (kind, args), = entry.items()
    if kind not in DISTRIBUTIONS:
        return f"unknown distribution {brief(kind)}; {allowed}"
    if not isinstance(args, list) or not args:
        return f"{kind}: expected a list, got {brief(args)}"
    if kind == "categorical":
        bad = [c for c in args if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            return f"categorical choices must be numbers, strings, booleans or null; got {brief(bad[0])}"
        if len(set(map(repr, args))) != len(args):
            return f"categorical choices repeat a value: {brief(args)}"
        return None
    if len(args) != 2 or not all(_number(a) for a in args):
        return f"{kind}: expected [low, high] numbers, got {brief(args)}"
    low, high = args
    if not all(math.isfinite(a) for a in args):
        return f"{kind}: low and high must be finite numbers, got {brief(args)}"
    if kind == "int" and not all(isinstance(a, int) for a in args):
        return f"int: low and high must be integers, got {brief(args)}"
    if not low < high:
        return f"{kind}: low must be below high, got [{low}, {high}]"
    if kind == "log_uniform" and low <= 0:
        return f"log_uniform: low must be > 0, got {low}"
    return None


def corner_values(entry: dict) -> list[Any]:
    """Values worth checking against the trainer config: the ends, or every choice."""
    (kind, args), = entry.items()
    return list(args)


def to_optuna(entry: dict):
    # optuna: seconds to import, only for a search sweep
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    (kind, args), = entry.items()
    if kind == "log_uniform":
        return FloatDistribution(float(args[0]), float(args[1]), log=True)
    if kind == "uniform":
        return FloatDistribution(float(args[0]), float(args[1]))
    if kind == "int":
        return IntDistribution(args[0], args[1])
    return CategoricalDistribution(list(args))


def describe(entry: dict) -> str:
    (kind, args), = entry.items()
    return f"{kind}{args}"
