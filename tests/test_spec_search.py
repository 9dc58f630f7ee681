"""Search mode (Optuna space, resolve) and `from_study` (tune small, transfer wide) against a
real tiny Optuna study in tmp_path."""
from __future__ import annotations

import os
import textwrap

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator.spec import load_sweep_text
from trainer.config import ConfigError

SEARCH = """
    name: tune
    tracking_uri: sqlite:///{db}
    base: {{scheme: mup, d_model: 64, batch_size: 4}}
    seeds: [3]
    derived:
      steps: "int(1000 / tokens_per_step * 100)"
    search:
      metric: min_val_loss
      mode: min
      num_samples: 7
      space:
        lr: {{log_uniform: [1e-4, 1e-2]}}
        alpha_out: {{uniform: [0.5, 2]}}
        n_layers: {{int: [1, 3]}}
        multipliers: {{categorical: [none, scalar, vector]}}
"""


def search_spec(tmp_path, text=SEARCH):
    return load_sweep_text(textwrap.dedent(text.format(db=tmp_path / "mlflow.db")), source="tune.yaml")


def test_search_spec_fields_and_optuna_space(tmp_path):
    spec = search_spec(tmp_path)
    assert spec.mode == "search" and spec.trials() == []
    s = spec.search
    assert (s.metric, s.mode, s.num_samples, s.study_name) == ("min_val_loss", "min", 7, "tune")
    # default storage: next to the sweep's MLflow SQLite db
    assert s.storage == "sqlite:///" + str(tmp_path / "optuna.db") and s.storage_is_default
    assert s.space["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert s.space["alpha_out"] == FloatDistribution(0.5, 2.0)
    assert s.space["n_layers"] == IntDistribution(1, 3)
    assert s.space["multipliers"] == CategoricalDistribution(["none", "scalar", "vector"])
    assert spec.seeds == [3]
    assert not os.path.exists(tmp_path / "optuna.db")


def test_resolve_applies_base_derived_and_seed(tmp_path):
    spec = search_spec(tmp_path)
    trial = spec.resolve({"lr": 0.002, "alpha_out": 1.5, "n_layers": 2, "multipliers": "vector"})
    cfg = trial.config
    assert (cfg.lr, cfg.alpha_out, cfg.n_layers, cfg.multipliers, cfg.seed) == (0.002, 1.5, 2, "vector", 3)
    assert cfg.scheme == "mup" and cfg.d_model == 64
    assert cfg.steps == int(1000 / (4 * 128) * 100)
    assert trial.overrides == {"lr": 0.002, "alpha_out": 1.5, "n_layers": 2, "multipliers": "vector", "seed": 3}
    assert trial.label == "mup+vector lr=2e-3 alpha_out=1.5 L=2 s=3"
    other_seed = spec.resolve({"lr": 0.002, "alpha_out": 1.5, "n_layers": 2, "multipliers": "vector", "seed": 1})
    assert other_seed.hash != trial.hash and other_seed.config.seed == 1


@pytest.mark.parametrize("values, fragment", [
    ({"lr": -1.0}, "greater than 0"),
    ({"lrr": 0.1}, "did you mean 'lr'"),
    ({"steps": 5}, "derived"),
    ({"d_model": 100}, "not a multiple of head_dim"),
])
def test_resolve_rejects_bad_samples_cleanly(tmp_path, values, fragment):
    with pytest.raises(ConfigError, match="tune.yaml") as info:
        search_spec(tmp_path).resolve(values)
    assert fragment in str(info.value)


def test_search_runs_one_seed_per_point(tmp_path):
    with pytest.raises(ConfigError, match=r"seeds \(line 5\): a search sweep runs one seed"):
        search_spec(tmp_path, SEARCH.replace("seeds: [3]", "seeds: 2"))


def test_grid_axes_cannot_be_combined_with_search(tmp_path):
    text = SEARCH + "    grid:\n      d_model: [64, 128]\n"
    with pytest.raises(ConfigError) as info:
        search_spec(tmp_path, text)
    message = str(info.value)
    assert "grid (line 17)" in message and "OptunaSearch cannot take grid_search" in message
    assert "seeds" in message


@pytest.mark.parametrize("entry, fragment", [
    ("{log_uniform: [0, 1]}", "low must be > 0"),
    ("{uniform: [2, 1]}", "low must be below high"),
    ("{int: [1.5, 3]}", "must be integers"),
    ("{categorical: []}", "expected a list"),
    ("{normal: [0, 1]}", "unknown distribution 'normal'"),
    ("[1, 2]", "expected one of"),
    ("{uniform: [-1, 10]}", "value in range: Input should be greater than 0 (got -1)"),
])
def test_bad_space_entries(tmp_path, entry, fragment):
    key = "alpha_emb"
    text = f"name: t\nsearch:\n  space:\n    {key}: {entry}\n"
    with pytest.raises(ConfigError) as info:
        load_sweep_text(text, source="t.yaml")
    assert f"search.space.{key} (line 4)" in str(info.value) and fragment in str(info.value)


def test_impossible_corner_of_the_space_is_found_at_load(tmp_path):
    text = "name: t\nbase: {d_model: 64}\nsearch:\n  space:\n    head_dim: {categorical: [16, 32, 30]}\n"
    with pytest.raises(ConfigError, match="head_dim: 30.*not a multiple"):
        load_sweep_text(text, source="t.yaml")


# --- from_study ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _study_db(tmp_path_factory):
    """A finished 4-trial study 'mup-tune' (best: lr=2e-3, alpha_out=1.25) and an empty one."""
    folder = tmp_path_factory.mktemp("studies")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="mup-tune", storage=storage)
    for lr, alpha_out in [(1e-3, 2.0), (3e-3, 0.5), (2e-3, 1.25), (1e-2, 4.0)]:
        study.enqueue_trial({"lr": lr, "alpha_out": alpha_out})
    study.optimize(lambda t: abs(t.suggest_float("lr", 1e-4, 1e-1, log=True) - 2e-3)
                   + abs(t.suggest_float("alpha_out", 0.1, 10) - 1.0) / 1000, n_trials=4)
    optuna.create_study(study_name="empty", storage=storage)
    return folder


@pytest.fixture
def study_dir(_study_db, monkeypatch):
    """Work in the folder holding ./optuna.db (sweeps name it by a relative sqlite URL)."""
    monkeypatch.chdir(_study_db)
    return _study_db


TRANSFER = """
name: transfer
base:
  from_study:
    storage: sqlite:///optuna.db
    study: {study}
    {keys}
  scheme: mup
grid:
  d_model: [64, 128]
"""


def transfer(study="mup-tune", keys="keys: [lr, alpha_out]", extra=""):
    return load_sweep_text(TRANSFER.format(study=study, keys=keys) + extra, source="transfer.yaml")


def test_from_study_takes_the_best_trial_values(study_dir):
    spec = transfer()
    assert spec.from_study["params"] == {"lr": 2e-3, "alpha_out": 1.25}
    for trial in spec.trials():
        assert (trial.config.lr, trial.config.alpha_out) == (2e-3, 1.25)
    assert {t.config.d_model for t in spec.trials()} == {64, 128}


def test_from_study_without_keys_takes_every_tuned_value(study_dir):
    assert transfer(keys="").base["alpha_out"] == 1.25


@pytest.mark.parametrize("kwargs, fragment", [
    ({"study": "mup-tuen"}, "no study named 'mup-tuen'"),
    ({"study": "empty"}, "has no best trial"),
    ({"keys": "keys: [lr, alpha_emb]"}, "did not tune ['alpha_emb']"),
    ({"keys": "keyz: [lr]"}, "did you mean 'keys'"),
    ({"extra": "  lr: [1e-3]\n"}, "already set at base.from_study"),
])
def test_from_study_mistakes(study_dir, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        transfer(**kwargs)
    message = str(info.value)
    assert "transfer.yaml" in message and "base.from_study" in message and fragment in message


def test_missing_storage_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"base.from_study \(line 4\).*does not exist"):
        transfer()
    assert list(tmp_path.iterdir()) == []
