"""Sweep files: loading, validation messages, expansion, derived values, hashing, GPU fractions."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import typing

import pytest

from orchestrator.spec import SweepSpec, load_sweep, load_sweep_text
from orchestrator.trial import parametrization_label, trial_hash
from trainer.config import RUNTIME_FIELDS, ConfigError, TrainConfig
from trainer.estimate import estimate


def write(tmp_path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(path)


def load(tmp_path, text: str) -> SweepSpec:
    return load_sweep(write(tmp_path, text))


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


SMALL = """
    name: small
    base:
      n_layers: 1
      steps: 10
      warmup_steps: 2
    grid:
      d_model: [64, 128, 256]
      lr: [1e-3, 3e-3]
    zip:
      scheme: [sp, mup]
      multipliers: [none, vector]
    seeds: 3
"""


# --- expansion ------------------------------------------------------------------------------
def test_grid_zip_seeds_expand_to_the_product(tmp_path):
    spec = load(tmp_path, SMALL)
    trials = spec.trials()
    assert len(trials) == 3 * 2 * 2 * 3
    assert len({t.hash for t in trials}) == len(trials)
    points = {(t.config.d_model, t.config.lr, t.config.scheme, t.config.multipliers, t.config.seed)
              for t in trials}
    assert (256, 3e-3, "mup", "vector", 2) in points
    # zip axes move together: never sp with vector multipliers
    assert not any(t.config.scheme == "sp" and t.config.multipliers == "vector" for t in trials)
    assert all(t.config.steps == 10 and t.config.n_layers == 1 for t in trials)


def test_trial_fields_follow_the_contract(tmp_path):
    trial = load(tmp_path, SMALL).trials()[0]
    assert set(trial.overrides) == {"d_model", "lr", "scheme", "multipliers", "seed"}
    assert trial.resources == {"cpu": 1.0, "gpu": 0.0}
    assert len(trial.hash) == 16 and int(trial.hash, 16) >= 0
    assert trial.hash == trial_hash(trial.config)
    assert trial.label == "sp d=64 lr=1e-3 s=0"
    mup = [t for t in load(tmp_path, SMALL).trials() if t.config.multipliers == "vector"][0]
    assert mup.label.startswith("mup+vector d=")


def test_trial_payload_round_trip(tmp_path):
    """A grid trial travels to its Ray worker as plain data in Tune's config and comes back the
    same Trial (config, overrides with lists and dicts, resources, label, hash)."""
    from orchestrator.trainable import TrialContext, trial_from_config
    from orchestrator.trial import GRID_TRIAL_KEY, Trial

    spec = load(tmp_path, """
        name: payload
        base: {n_layers: 1, steps: 10, warmup_steps: 2, scheme: mup, multipliers: scalar}
        grid:
          multiplier_overrides: [{head: scalar}, {}]
          corpus: [kjv, [kjv]]
        resources: {cpu: 2, gpu: 0.5}
    """)
    trials = spec.trials()
    assert len(trials) == 4 and trials[0].overrides["multiplier_overrides"] == {"head": "scalar"}
    for trial in trials:
        payload = json.loads(json.dumps(trial.to_payload()))
        assert Trial.from_payload(payload) == trial
        assert trial_from_config({GRID_TRIAL_KEY: payload}, TrialContext(trials_root="unused")) == trial


def test_seed_major_order_runs_seed_zero_of_every_point_first(tmp_path):
    seeds = [t.config.seed for t in load(tmp_path, SMALL).trials()]
    assert seeds == sorted(seeds)


def test_yaml_1e_minus_3_is_a_number(tmp_path):
    spec = load(tmp_path, "name: x\ngrid: {lr: [1e-3]}\n")
    assert spec.trials()[0].overrides["lr"] == 0.001


def test_labels_of_unusual_numbers(tmp_path):
    # (`.inf` was in this list: non-finite values are now refused, see test_spec_inputs.py)
    spec = load(tmp_path, "name: x\ngrid:\n  lr: [123456.0, 0.5]\n")
    assert [t.label for t in spec.trials()] == ["sp lr=1.23e5 s=0", "sp lr=0.5 s=0"]


def test_seeds_forms(tmp_path):
    assert load(tmp_path, "name: x\nseeds: 3\n").seeds == [0, 1, 2]
    assert load(tmp_path, "name: x\nseeds: [5, 7]\n").seeds == [5, 7]
    spec = load(tmp_path, "name: x\nbase: {seed: 4}\n")
    assert spec.seeds == [4] and spec.trials()[0].config.seed == 4


def test_defaults(tmp_path):
    spec = load(tmp_path, "name: only-a-name\n")
    assert (spec.name, spec.experiment, spec.tracking_uri, spec.mode) == ("only-a-name", "only-a-name", None, "grid")
    assert (spec.concurrency, spec.retries, spec.search) == (None, 1, None)
    assert spec.resources == {"cpu": 1.0, "gpu": 0.0}
    assert len(spec.trials()) == 1 and spec.trials()[0].config == TrainConfig()


def test_points_resolving_to_the_same_config_are_one_trial(tmp_path):
    spec = load(tmp_path, """
        name: x
        grid:
          lr: [0.001, 1e-3, 0.002]
    """)
    assert len(spec.trials()) == 2
    assert spec.merged_duplicates == 1
    assert "1 duplicate point(s) merged" in spec.summary()


# --- derived values ---------------------------------------------------------------------------
def test_derived_steps_from_tokens_per_parameter(tmp_path):
    spec = load(tmp_path, """
        name: x
        base: {batch_size: 8, seq_len: 64}
        grid:
          d_model: [64, 128]
        derived:
          steps: "int(2 * n_params / tokens_per_step)"
          warmup_steps: "max(1, steps // 10)"
          eval_interval: "min(steps, 100)"
    """)
    for trial in spec.trials():
        cfg = trial.config
        assert cfg.steps == int(2 * estimate(cfg)["n_params"] / (8 * 64))
        assert cfg.warmup_steps == max(1, cfg.steps // 10)
        assert cfg.eval_interval == min(cfg.steps, 100)
    assert spec.trials()[0].config.steps < spec.trials()[1].config.steps


def test_derived_helpers(tmp_path):
    spec = load(tmp_path, """
        name: x
        base: {d_model: 256, head_dim: 32, base_width: 64}
        derived:
          n_layers: "n_heads // 2"
          lr: "1e-2 / width_mult"
          alpha_out: "sqrt(4) + log2(8) - 1"
    """)
    cfg = spec.trials()[0].config
    assert (cfg.n_layers, cfg.lr, cfg.alpha_out) == (4, 1e-2 / 4, 4.0)


def test_derived_helpers_are_the_configs_own_quantities():
    from orchestrator import derive

    cfg = TrainConfig(d_model=192, head_dim=32, base_width=64, mlp_ratio=2.5, n_layers=3, base_depth=2)
    for name, helper in derive.HELPERS.items():
        expected = estimate(cfg)[name] if name.startswith("n_params") else getattr(cfg, name)
        assert helper(cfg) == expected, name


@pytest.mark.parametrize("expr, fragment", [
    ("__import__('os')", "unknown function '__import__'"),
    ("__import__('os').system('true')", "unknown function"),
    ("steps.real", "is not allowed"),
    ("n_param * 2", "did you mean 'n_params'"),
    ("'a' * 3", "only numbers"),
    ("lambda: 1", "is not allowed"),
    ("2 ** 10 ** 10", "too large"),
    ("(10 ** 60) ** 60 ** 2", "too large"),
    ("1 +", "not a valid expression"),
    ("corpus * 1000", "not a number"),
])
def test_unsafe_or_wrong_expressions_are_rejected(tmp_path, expr, fragment):
    message = error_of(tmp_path, f"name: x\nderived:\n  steps: {json.dumps(expr)}\n")
    assert "sweep.yaml" in message and "derived.steps (line 3)" in message
    assert fragment in message


def test_derived_fraction_for_an_int_key_says_how_to_fix(tmp_path):
    message = error_of(tmp_path, "name: x\nderived:\n  steps: 'n_params / 1000'\n")
    assert "derived.steps (line 3)" in message and "int(...)" in message


# --- validation messages: file, key path, line, what is allowed ------------------------------
@pytest.mark.parametrize("text, fragments", [
    ("name: x\ngrdi:\n  lr: [1]\n", ["grdi (line 2)", "unknown key", "did you mean 'grid'"]),
    ("name: x\nbase:\n  d_modle: 64\n", ["base.d_modle (line 3)", "did you mean 'd_model'"]),
    ("name: x\ngrid:\n  lr: [1e-3,\n       3e-3,\n       -1]\n", ["grid.lr[2] (line 5)", "greater than 0"]),
    ("name: x\ngrid:\n  scheme: [sp, mupp]\n", ["grid.scheme[1] (line 3)", "'sp' or 'mup'"]),
    ("name: x\ngrid:\n  lr: 3\n", ["grid.lr (line 3)", "valid list"]),
    ("name: x\ngrid:\n  lr: []\n", ["grid.lr (line 3)", "non-empty list"]),
    ("name: x\nzip:\n  lr: [1, 2]\n  weight_decay: [0.1]\n",
     ["zip (line 2)", "zip.lr (line 3) has 2", "zip.weight_decay (line 4) has 1"]),
    ("name: x\nseeds: [0, 0]\n", ["seeds (line 2)", "repeat"]),
    ("name: x\nseeds: -1\n", ["seeds (line 2)", "between 1 and"]),
    ("name: x\nresources:\n  gpus: 1\n", ["resources.gpus (line 3)", "did you mean 'gpu'"]),
    ("name: x\nresources:\n  gpu: lots\n", ["resources.gpu (line 3)", "'auto'"]),
    ("name: x\nconcurrency: 0\n", ["concurrency (line 2)", "greater than or equal to 1"]),
    ("name: 'two words'\n", ["name (line 1)", "letters, digits"]),
    ("base: {}\n", ["name", "required key is missing"]),
    ("name: x\nbase: {lr: 1e-3}\ngrid: {lr: [1e-3]}\n", ["grid.lr (line 3)", "already set at base.lr (line 2)"]),
    ("name: x\ngrid: {seed: [1, 2]}\n", ["grid.seed (line 2)", "seeds:"]),
    ("name: x\nbase: {seed: 1}\nseeds: 2\n", ["seeds (line 3)", "base.seed (line 2)"]),
    ("name: x\nbase:\n  lr: 1\n  lr: 2\n", ["base.lr (line 4)", "duplicate key", "line 3"]),
    ("name: x\nsearch: 5\n", ["search (line 2)", "expected a mapping"]),
    ("name: x\nsearch:\n  metric: loss\n  space: {lr: {uniform: [0.1, 1]}}\n",
     ["search.metric (line 3)", "final_val_loss"]),
])
def test_each_mistake_names_file_key_path_and_line(tmp_path, text, fragments):
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "sweep.yaml") + ":")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_impossible_combination_names_the_grid_point(tmp_path):
    message = error_of(tmp_path, """
        name: x
        base: {head_dim: 32}
        grid:
          lr: [1e-3]
          d_model: [64, 100]
    """)
    assert "d_model: 100" in message and "lr: 1e-3" in message
    assert "grid.d_model[1] (line 5)" in message
    assert "not a multiple of head_dim=32" in message


def test_problems_in_several_places_are_listed_together(tmp_path):
    message = error_of(tmp_path, "name: x\nbase:\n  lr: -1\n  warmup: 3\ngrid:\n  d_model: [0]\n")
    assert "3 problems" in message
    assert "base.lr (line 3)" in message and "base.warmup (line 4)" in message
    assert "grid.d_model[0] (line 6)" in message


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- a\n- b\n", "got a list"),
    ("just text\n", "got a string"),
    ("name: x\nbase: {d_model: 64\n", "not valid YAML at line"),
    ("name: [x\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("name: !!python/object:os.system x\n", "not valid YAML"),
    ("1: x\n", "is not text"),
    ("[" * 100 + "]" * 100, "nested too deeply (more than 40 levels)"),
    ("name: x\nbad: \x07\n", "not valid YAML"),
])
def test_malformed_files_give_clean_messages(tmp_path, text, fragment):
    assert fragment in error_of(tmp_path, text)


def test_extreme_nesting_is_one_clean_line(tmp_path):
    """5,000 levels: PyYAML (>= 6.0.4) may refuse this itself before our own depth bound does;
    either way the user gets one line naming the file and the nesting, never a traceback."""
    message = error_of(tmp_path, "[" * 5000 + "]" * 5000)
    assert message.startswith(str(tmp_path / "sweep.yaml") + ":")
    assert "nest" in message.lower() and "\n" not in message and len(message) < 300


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_sweep(str(tmp_path / "nope.yaml"))
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_sweep(str(tmp_path / "bin.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_sweep(str(tmp_path))


def test_too_many_trials_fails_fast(tmp_path):
    values = list(range(1, 101))
    message = error_of(tmp_path, f"name: x\ngrid:\n  eval_batches: {values}\n  steps: {values}\n"
                                 f"  eval_interval: {values}\nseeds: 20\n")
    assert "more than the limit" in message


# --- hashing -----------------------------------------------------------------------------------
def test_hash_does_not_depend_on_key_order(tmp_path):
    a = load_sweep_text("name: x\nbase: {lr: 1e-3, d_model: 64, scheme: mup}\n")
    b = load_sweep_text("name: y\nbase: {scheme: mup, d_model: 64, lr: 0.001}\n")
    assert a.trials()[0].hash == b.trials()[0].hash
    # grid axis vs base: the same resolved config is the same trial
    c = load_sweep_text("name: z\nbase: {scheme: mup, lr: 1e-3}\ngrid: {d_model: [64, 128]}\n")
    assert a.trials()[0].hash in {t.hash for t in c.trials()}


def test_hash_is_stable_across_processes():
    cfg = TrainConfig(d_model=64, lr=3e-3, multiplier_overrides={"head": "scalar", "attn_k": "none"})
    code = ("from trainer.config import TrainConfig; from orchestrator.trial import trial_hash; "
            "print(trial_hash(TrainConfig(d_model=64, lr=3e-3, "
            "multiplier_overrides={'attn_k': 'none', 'head': 'scalar'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=_repo_root())
    assert out.stdout.strip() == trial_hash(cfg)


def test_hash_changes_when_any_experiment_field_changes():
    base = TrainConfig()
    seen = {trial_hash(base)}
    for name, value in _one_change_per_field(base).items():
        changed = base.model_copy(update={name: value})
        h = trial_hash(changed)
        if name in RUNTIME_FIELDS:
            assert h == trial_hash(base), f"runtime option {name} must not change the trial's identity"
            continue
        assert h not in seen, name
        seen.add(h)


def _one_change_per_field(cfg: TrainConfig) -> dict:
    changes = {}
    for name, value in cfg.model_dump().items():
        if isinstance(value, bool):
            changes[name] = not value
        elif isinstance(value, (int, float)):
            changes[name] = value + 1
        elif isinstance(value, str):
            changes[name] = value + "x"
        elif value is None:
            changes[name] = "x" if str in typing.get_args(TrainConfig.model_fields[name].annotation) else 1.0
        elif isinstance(value, dict):
            changes[name] = {"head": "scalar"}
    assert len(changes) == len(TrainConfig.model_fields)
    return changes


def _repo_root() -> str:
    import pathlib
    return str(pathlib.Path(__file__).resolve().parents[1])


def test_parametrization_label():
    assert parametrization_label(TrainConfig(scheme="sp")) == "sp"
    assert parametrization_label(TrainConfig(scheme="mup", multipliers="vector")) == "mup+vector"


# --- resources -----------------------------------------------------------------------------------
def test_gpu_auto_gives_a_fraction_from_estimated_memory(tmp_path):
    spec = load(tmp_path, """
        name: x
        grid:
          d_model: [64, 2048]
        resources: {cpu: 2, gpu: auto, gpu_memory_gb: 8}
    """)  # (was gpu_memory_gb: 1, which d_model 2048 (3.5 GiB) no longer fits: now an error)
    assert spec.resources == {"cpu": 2.0, "gpu": "auto"}
    small, big = spec.trials()
    for trial in (small, big):
        need = estimate(trial.config)["memory_bytes"] / 2 ** 30 / 8
        fraction = trial.resources["gpu"]
        assert fraction in (0.125, 0.25, 0.5, 1.0)
        assert fraction >= min(need, 1.0)
        assert fraction == 0.125 or fraction / 2 < need
    assert small.resources["gpu"] < big.resources["gpu"] == 0.5
    assert small.resources["cpu"] == 2.0


def test_fixed_gpu_passes_through(tmp_path):
    trial = load(tmp_path, "name: x\nresources: {gpu: 0.25}\n").trials()[0]
    assert trial.resources["gpu"] == 0.25


def test_the_examples_in_the_docs_are_valid(tmp_path, monkeypatch):
    import pathlib
    import re
    doc = (pathlib.Path(_repo_root()) / "docs" / "sweeps.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    complete = load_sweep_text(blocks[0], source="example")
    assert len(complete.trials()) == 3 * 4 * 3 * 3
    assert {t.config.steps for t in complete.trials()} == {
        int(20 * estimate(t.config)["n_params"] / (32 * 256)) for t in complete.trials()}
    search = load_sweep_text(blocks[1], source="search example")
    assert search.mode == "search" and set(search.search.space) == {"lr", "alpha_out", "n_layers", "multipliers"}
    with pytest.raises(ConfigError, match="optuna.db"):  # no study here: a clean error
        load_sweep_text(blocks[2], source="transfer example")
