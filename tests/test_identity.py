"""Trial identity (orchestrator.trial.trial_hash): what defines a trial's result, pinned.

A change that alters these hashes makes every finished trial of every experiment look new:
it reruns them and orphans their checkpoints. If such a change is intended, bump
IDENTITY_VERSION, update the pins here, and say in docs/sweeps.md how `scalelab migrate` carries
old experiments over."""
from __future__ import annotations

import pathlib

import pytest
import yaml
from mlflow.tracking import MlflowClient
from pydantic import create_model

from orchestrator.cli import main
from orchestrator.layout import TAG_HASH, TAG_IDENTITY, TAG_PREVIOUS_HASH
from orchestrator.migrate import migrate_experiment
from orchestrator.spec import load_sweep
from orchestrator.trial import IDENTITY_VERSION, legacy_trial_hash, trial_hash
from orchestrator.tracking_query import finished_hashes
from trainer.config import RUNTIME_FIELDS, TrainConfig, UserError

REPO = pathlib.Path(__file__).resolve().parents[1]

# sweeps/quickstart.yaml, label -> hash, under identity version 2.
QUICKSTART_HASHES = {
    'sp d=64 lr=1e-3 s=0': 'b36e0788d184f08c',
    'mup d=64 lr=1e-3 s=0': 'fe9feb6de31d51f8',
    'mup+vector d=64 lr=1e-3 s=0': '8d6cda6f85eb1992',
    'sp d=64 lr=3e-3 s=0': '440510e08c30a8a5',
    'mup d=64 lr=3e-3 s=0': 'e1c6f86ccfa4b319',
    'mup+vector d=64 lr=3e-3 s=0': '9b5772af74f9a4d3',
    'sp d=64 lr=0.01 s=0': '8a8ad38756ef6c7b',
    'mup d=64 lr=0.01 s=0': '7cecea5434fe3783',
    'mup+vector d=64 lr=0.01 s=0': '5174eed127230343',
    'sp d=64 lr=0.03 s=0': '64056655ce796168',
    'mup d=64 lr=0.03 s=0': '9a7d270d7a93582b',
    'mup+vector d=64 lr=0.03 s=0': '7cc2784cac6ee065',
    'sp d=128 lr=1e-3 s=0': 'dfb48e11a0e99b20',
    'mup d=128 lr=1e-3 s=0': 'cb8b0ad0fea65148',
    'mup+vector d=128 lr=1e-3 s=0': 'ed33fc1388adbc6c',
    'sp d=128 lr=3e-3 s=0': 'c5987ec7ee82e63b',
    'mup d=128 lr=3e-3 s=0': 'd3e1a5fd50404008',
    'mup+vector d=128 lr=3e-3 s=0': '41e060cdf5eccd49',
    'sp d=128 lr=0.01 s=0': '5f6408dddd60bdf2',
    'mup d=128 lr=0.01 s=0': 'bea2cf7f3e5a6c4f',
    'mup+vector d=128 lr=0.01 s=0': 'edadc9daa0f582e4',
    'sp d=128 lr=0.03 s=0': 'cc898aa93e9928c6',
    'mup d=128 lr=0.03 s=0': 'c177b3c68b4c401b',
    'mup+vector d=128 lr=0.03 s=0': 'b2365f709e9e2b43',
    'sp d=256 lr=1e-3 s=0': '22b54fbf7173079e',
    'mup d=256 lr=1e-3 s=0': 'b203f62e87a557cc',
    'mup+vector d=256 lr=1e-3 s=0': '607b80e4f7afff02',
    'sp d=256 lr=3e-3 s=0': '9ff819e8f4ee3ea3',
    'mup d=256 lr=3e-3 s=0': '597e19aa62d09ecd',
    'mup+vector d=256 lr=3e-3 s=0': '66577a04eb11f25a',
    'sp d=256 lr=0.01 s=0': '1136ac55f461a763',
    'mup d=256 lr=0.01 s=0': '81e507eae8be40f1',
    'mup+vector d=256 lr=0.01 s=0': '2dbe65ce0f5c24d4',
    'sp d=256 lr=0.03 s=0': '00cac3670d732eb5',
    'mup d=256 lr=0.03 s=0': '005230f02d45cd25',
    'mup+vector d=256 lr=0.03 s=0': 'f3a814e1d222533d',
}

# The default of every experiment field. A field at its default is left out of the hash, so
# changing a default silently changes what every recorded hash means: that needs a new
# IDENTITY_VERSION and a migration, not an edit here.
EXPERIMENT_DEFAULTS = {
    "d_model": 128, "n_layers": 2, "head_dim": 32, "mlp_ratio": 4.0, "vocab_size": 256, "seq_len": 128,
    "freeze_norms": False, "scheme": "sp", "multipliers": "none", "multiplier_placement": "paper",
    "multiplier_overrides": {}, "multiplier_init": "one", "base_width": 128, "base_depth": 2,
    "width_recipe": "lr", "depth_scaling": "none", "init_std": 1.0, "emb_init_std": 1.0,
    "head_init_std": 1.0, "alpha_emb": 1.0, "alpha_out": 1.0, "alpha_attn": 1.0, "lr_mult_emb": 1.0,
    "lr_mult_hidden": 1.0, "lr_mult_head": 1.0, "lr_mult_vector": 1.0, "lr_mult_multiplier": 1.0,
    "multiplier_lr_width_exponent": 0.0, "wd_mult_emb": 1.0, "wd_mult_hidden": 1.0, "wd_mult_head": 1.0,
    "wd_mult_vector": 0.0, "multiplier_wd": 0.002, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.1,
    "wd_mode": "decoupled", "beta1": 0.9, "beta2": 0.95, "eps": 1e-08, "muon_momentum": 0.95,
    "grad_clip": 1.0, "schedule": "wsd", "warmup_steps": 20, "decay_frac": 0.2, "min_lr_ratio": 0.0,
    "corpus": "kjv", "parquet_column": "text", "val_fraction": 0.05, "batch_size": 16, "steps": 300,
    "seed": 0, "eval_interval": 50, "eval_batches": 4, "divergence_factor": 2.0,
}


def test_quickstart_hashes_are_pinned():
    got = {t.label: t.hash for t in load_sweep(str(REPO / "sweeps" / "quickstart.yaml")).trials()}
    assert got == QUICKSTART_HASHES


def test_experiment_defaults_are_pinned():
    defaults = {k: f.get_default(call_default_factory=True) for k, f in TrainConfig.model_fields.items()
                if k not in RUNTIME_FIELDS}
    assert defaults == EXPERIMENT_DEFAULTS


def test_runtime_options_do_not_change_the_hash():
    base = TrainConfig(d_model=64, scheme="mup", lr=1e-2)
    runtime = {"device": "cpu", "compile": True, "threads": 3, "peak_flops": 1e12,
               "cache_dir": "/somewhere/else", "record_activations": False, "micro_batch_size": 2}
    assert set(runtime) == set(RUNTIME_FIELDS)
    for key, value in runtime.items():
        assert trial_hash(base.model_copy(update={key: value})) == trial_hash(base), key


def test_a_new_field_at_its_default_keeps_old_hashes():
    """A later version adding a field (at a default that reproduces the old behaviour) must not
    rerun what was trained before it existed; setting the new field away from it must."""
    Later = create_model("Later", __base__=TrainConfig, new_knob=(float, 1.0))
    cfg = TrainConfig(d_model=64, scheme="mup", multipliers="vector", lr=1e-2)
    later = Later(**cfg.model_dump())
    assert trial_hash(later) == trial_hash(cfg)
    assert trial_hash(later.model_copy(update={"new_knob": 2.0})) != trial_hash(cfg)


def test_explicit_default_is_the_same_trial():
    assert trial_hash(TrainConfig(lr=0.003, weight_decay=0.1)) == trial_hash(TrainConfig())


def _legacy_store(tmp_path):
    """An experiment written by identity version 1: hash of every field, no identity tag."""
    sweep = load_sweep(str(REPO / "sweeps" / "quickstart.yaml"))
    trials = sweep.trials()[:3]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quickstart", artifact_location=(tmp_path / "art").as_uri())
    runs = []
    for trial, outcome in zip(trials, ["finished", "diverged", "failed"]):
        old = legacy_trial_hash(trial.config.model_dump())
        run = client.create_run(exp, tags={"scalelab.kind": "trial", TAG_HASH: old, "scalelab.outcome": outcome})
        client.log_text(run.info.run_id, yaml.safe_dump(trial.config.model_dump()), "config.yaml")
        runs.append((run.info.run_id, old, trial.hash))
    return uri, runs


def test_old_identity_is_refused_then_migrated(tmp_path, capsys):
    uri, runs = _legacy_store(tmp_path)
    with pytest.raises(UserError, match="scalelab migrate quickstart"):
        finished_hashes(uri, "quickstart")
    storage = tmp_path / "storage"
    (storage / "trials" / "quickstart" / runs[2][1] / "checkpoints").mkdir(parents=True)  # the failed one

    assert main(["migrate", "quickstart", "--tracking-uri", uri, "--storage", str(storage), "--dry-run"]) == 0
    assert "would re-key 3 trial run(s)" in capsys.readouterr().out
    with pytest.raises(UserError):  # a dry run changes nothing
        finished_hashes(uri, "quickstart")

    assert main(["migrate", "quickstart", "--tracking-uri", uri, "--storage", str(storage)]) == 0
    assert finished_hashes(uri, "quickstart") == {runs[0][2]: "finished", runs[1][2]: "diverged"}
    client = MlflowClient(tracking_uri=uri)
    for run_id, old, new in runs:
        tags = client.get_run(run_id).data.tags
        assert (tags[TAG_HASH], tags[TAG_PREVIOUS_HASH], tags[TAG_IDENTITY]) == (new, old, str(IDENTITY_VERSION))
    assert (storage / "trials" / "quickstart" / runs[2][2] / "checkpoints").is_dir()
    assert not (storage / "trials" / "quickstart" / runs[2][1]).exists()

    again = migrate_experiment(uri, "quickstart")  # idempotent
    assert (again.rekeyed, again.current) == ({}, 3)


def test_migrate_names_a_missing_experiment(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["migrate", "nope", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
