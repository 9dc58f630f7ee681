"""Property-based fuzzing: whatever the file holds, loading it either works or raises a clean
ConfigError that names the file — never another exception."""
from __future__ import annotations

import math
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.spec import load_sweep_text
from orchestrator.spec_schema import SweepFile
from orchestrator.locations import safe_component
from trainer.config import ConfigError, TrainConfig, UserError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOURCE = "fuzz.yaml"

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
top_keys = st.sampled_from(list(SweepFile.model_fields) + ["nmae", "grdi", "from_study"])
config_keys = st.sampled_from(list(TrainConfig.model_fields) + ["seed", "d_modle", "from_study"])
good_values = {
    "d_model": st.sampled_from([64, 100, 128, -1, "big"]),
    "lr": st.sampled_from([1e-3, 0, -1, "x", float("inf"), float("nan")]),
    "scheme": st.sampled_from(["sp", "mup", "mu"]), "steps": st.sampled_from([10, 0, 2.5]),
}


def check(text: str) -> None:
    try:
        spec = load_sweep_text(text, source=SOURCE)
    except ConfigError as err:
        assert str(err).startswith(SOURCE), str(err)
        return
    for trial in spec.trials():  # a file that loads gives valid, hashed trials
        assert isinstance(trial.config, TrainConfig) and len(trial.hash) == 16


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(["name: x\n", "base:\n", "  lr: 1e-3\n", "grid:\n", "  d_model: [64, 128]\n",
                                 "  - 3\n", "zip: {lr: [1, 2], steps: [3]}\n", "seeds: 2\n", "search:\n",
                                 "  space:\n", "    lr: {log_uniform: [1e-4, 1e-2]}\n", "derived:\n",
                                 "  steps: 'n_params // 100'\n", "&a [*a]\n", "{", "]", ": :", "\t",
                                 "resources: {gpu: auto}\n", "  from_study: {storage: x, study: y}\n",
                                 "!!binary AAA\n", "x: !!int abc\n", "? [a]\n: b\n"]), max_size=12))
def test_shuffled_fragments_of_sweep_files(lines):
    check("".join(lines))


@FUZZ
@given(st.dictionaries(top_keys, values, max_size=6))
def test_random_top_level_mappings(mapping):
    check(yaml.safe_dump(mapping, allow_unicode=True))


@FUZZ
@given(st.dictionaries(config_keys, values, max_size=5),
       st.dictionaries(st.sampled_from(list(good_values)), st.lists(values, max_size=3), max_size=3),
       st.dictionaries(st.sampled_from(["steps", "lr", "warmup_steps", "bogus"]),
                       st.sampled_from(["n_params / 3", "int(n_params / tokens_per_step)", "1/0",
                                        "log2(0)", "lr * 2", "max()", "steps", "2 ** 0.5", "(-8) ** 0.5",
                                        "int(1e308 * 10)", "sqrt(-1)"]), max_size=2),
       st.one_of(st.none(), st.integers(-2, 4), st.lists(st.integers(0, 3), max_size=3)))
def test_random_sweep_shaped_mappings(base, grid, derived, seeds):
    mapping = {"name": "fuzz", "base": base, "grid": grid, "derived": derived}
    if seeds is not None:
        mapping["seeds"] = seeds
    check(yaml.safe_dump(mapping, allow_unicode=True))


@FUZZ
@given(st.fixed_dictionaries({k: st.one_of(v, values) for k, v in good_values.items()}))
def test_resolve_of_random_samples(sample):
    spec = load_sweep_text("name: t\nsearch:\n  space:\n    lr: {log_uniform: [1e-4, 1e-2]}\n", source=SOURCE)
    try:
        trial = spec.resolve(sample)
    except ConfigError as err:
        assert str(err).startswith(SOURCE)
        return
    assert trial.config.lr == sample["lr"]


# --- hostile files (issue 9): bounded time, only ConfigError, the key (or line) named --------
HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_EXAMPLE_S = 2.0  # a correctness bound against exponential blow-up, not a benchmark


def check_hostile(text: str, names: tuple[str, ...]) -> None:
    """Loading answers within PER_EXAMPLE_S, with a trial list or a ConfigError that names the
    file and one of `names` (the key, or the line of a YAML-level refusal)."""
    start = time.perf_counter()
    try:
        spec = load_sweep_text(text, source=SOURCE)
        trials = spec.trials()
    except UserError as err:  # ConfigError is one
        message = str(err)
        assert message.startswith(SOURCE), message
        assert any(n in message for n in names), (names, message[:500])
        assert len(message) < 5000
    else:
        for trial in trials:
            cfg = trial.config
            for key, value in cfg.model_dump().items():  # what loads is finite and not a boolean-as-number
                if isinstance(value, float):
                    assert math.isfinite(value), (key, value)
    assert time.perf_counter() - start < PER_EXAMPLE_S, text[:200]


def alias_bomb(width: int, depth: int) -> tuple[str, str]:
    lines = [f"b0: &b0 [{', '.join(['1'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]")
    return "\n".join(lines), f"*b{depth - 1}"


@HOSTILE
@given(st.integers(2, 12), st.integers(2, 10),
       st.sampled_from(["seeds: {}", "resources: {{gpu: {}}}", "grid: {{lr: {}}}", "base: {{corpus: {}}}",
                        "description: {}", "zip: {{lr: {}, steps: {}}}", "search: {{space: {{lr: {{categorical: {}}}}}}}"]))
def test_alias_bombs(width, depth, template):
    anchors, ref = alias_bomb(width, depth)
    check_hostile(f"{anchors}\nname: x\n{template.format(ref, ref)}\n", ("line", "seeds", "resources", "grid",
                                                                        "base", "description", "zip", "search", "b0"))


hostile_scalars = st.sampled_from([
    ".inf", "-.inf", ".nan", "1e400", "-1e400", "Infinity", "NaN", "inf", "true", "false", "yes", "on",
    "12:30", "1:00:00", "190:20:30.15", "0x7fffffffffffffff", "1e30", "-1", "0", "99999999999999999999",
    "'" + "x" * 5000 + "'", "~", "[]", "{}", "0o17", "1_000", "+.5"])
number_keys = st.sampled_from(["lr", "steps", "d_model", "batch_size", "seed", "warmup_steps", "mlp_ratio",
                               "eps", "peak_flops", "threads", "beta1", "corpus", "scheme"])


@HOSTILE
@given(number_keys, hostile_scalars, st.sampled_from(["base", "grid"]))
def test_hostile_values(key, value, section):
    text = f"name: x\n{section}:\n  {key}: {value if section == 'base' else '[' + value + ']'}\n"
    check_hostile(text, (f"{section}.{key}", "seeds", "not valid YAML"))


@HOSTILE
@given(hostile_scalars, st.sampled_from(["seeds", "resources: {gpu", "resources: {cpu", "resources: {gpu_memory_gb",
                                         "concurrency", "retries", "search: {num_samples"]))
def test_hostile_top_level_values(value, key):
    text = f"name: x\n{key}: {value}" + ("}" * key.count("{")) + "\n"
    names = (key.split(":")[0], key.split("{")[-1], "not valid YAML")
    check_hostile(text, names)


@HOSTILE
@given(st.integers(1, 3000), st.sampled_from(["+", "-", "*", "/", "**", "%"]),
       st.sampled_from(["1", "lr", "steps", "n_params", "(1", "2.0"]), st.booleans())
def test_deep_expressions(n, op, term, nested):
    expr = f"{op}".join([term] * n) if not nested else "(" * n + "1" + ")" * n
    key = "warmup_steps" if op in ("%", "-") else "lr"
    text = f"name: x\nbase: {{steps: 100}}\nderived:\n  {key}: '{expr}'\n"
    check_hostile(text, (f"derived.{key}", "not valid YAML", "larger than"))


@HOSTILE
@given(st.one_of(st.text(min_size=1, max_size=400), st.sampled_from(["../../../x", "/abs/path", "..", "a/b",
                                                                    "x" * 300, "C:\\x", "~/x", "$HOME"])),
       st.sampled_from(["name", "experiment"]))
def test_long_and_path_like_names(name, key):
    text = yaml.safe_dump({"name": "x", key: name} if key == "experiment" else {"name": name})
    start = time.perf_counter()
    try:
        spec = load_sweep_text(text, source=SOURCE)
    except ConfigError as err:
        assert str(err).startswith(SOURCE) and key in str(err)
    else:
        part = safe_component(spec.experiment)
        assert "/" not in part and part not in (".", "..") and len(part) <= 100
        assert "/" not in spec.name and len(spec.name) <= 100
    assert time.perf_counter() - start < PER_EXAMPLE_S
