"""Property-based fuzzing: whatever the file holds, loading it either works or raises a clean
ConfigError that names the file — never another exception."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.spec import load_sweep_text
from orchestrator.spec_schema import SweepFile
from trainer.config import ConfigError, TrainConfig

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
