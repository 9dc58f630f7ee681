"""`scalelab plan` and `scalelab run` agree on what a sweep still owes, on one experiment shared
with another sweep: plan's numbers (the CLI, read-only) against the run's accounting (the sweep
mode with a real SweepTracker), on a real SQLite MLflow store; no Ray."""
from __future__ import annotations

import io
import json

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.layout import (KIND_SWEEP, KIND_TRIAL, TAG_HASH, TAG_IDENTITY, TAG_KIND, TAG_OUTCOME, TAG_PARENT,
                                 TAG_SWEEP)
from orchestrator.run_writes import SweepTracker
from orchestrator.spec import load_sweep
from orchestrator.sweep_modes import sweep_mode
from orchestrator.tracking_query import finished_hashes
from orchestrator.trial import IDENTITY_VERSION

EXPERIMENT = "shared"


def record(client, exp_id: str, sweep: str, results: list[tuple[str, str]]) -> None:
    """One trial run per (hash, outcome) under the parent run of `sweep` (made if it has none)."""
    parents = client.search_runs([exp_id], f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = '{KIND_SWEEP}'")
    parent = (parents[0] if parents else client.create_run(exp_id, tags={TAG_KIND: KIND_SWEEP, TAG_SWEEP: sweep})
              ).info.run_id
    for trial_hash, outcome in results:
        run = client.create_run(exp_id, tags={TAG_PARENT: parent, TAG_KIND: KIND_TRIAL, TAG_SWEEP: sweep,
                                              TAG_HASH: trial_hash, TAG_OUTCOME: outcome,
                                              TAG_IDENTITY: str(IDENTITY_VERSION)})
        client.log_metric(run.info.run_id, "final_val_loss", 3.0)
        client.set_terminated(run.info.run_id, "FAILED" if outcome == "failed" else "FINISHED")


def plan_totals(path, uri: str, capsys) -> dict:
    assert main(["plan", str(path), "--json", "--no-measure", "--tracking-uri", uri]) == 0
    return json.loads(capsys.readouterr().out)["totals"]


def run_owes(path, uri: str) -> int:
    spec = load_sweep(str(path))
    mode = sweep_mode(spec, "sqlite:///unused-optuna.db")
    tracker = SweepTracker(uri, spec.experiment, spec.name, spec.mode)
    mode.plan_run(tracker, finished_hashes(uri, spec.experiment), io.StringIO())
    return mode.to_run


@pytest.fixture
def store(tmp_path):
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    return uri, client, client.create_experiment(EXPERIMENT)


def test_search_sweep_owes_its_own_samples_only(tiny_sweep, store, capsys):
    """3 finished runs of another sweep do not count for a 5-sample search; its own 1 does."""
    uri, client, exp = store
    path = tiny_sweep("tune", experiment=EXPERIMENT, seeds=[0],
                      search={"num_samples": 5, "space": {"lr": {"log_uniform": [1e-4, 1e-2]}}})
    record(client, exp, "other", [("a" * 16, "finished"), ("b" * 16, "finished"), ("c" * 16, "diverged")])
    assert plan_totals(path, uri, capsys)["to_run"] == run_owes(path, uri) == 5

    record(client, exp, "tune", [("d" * 16, "finished"), ("e" * 16, "failed")])
    totals = plan_totals(path, uri, capsys)
    assert (totals["done"], totals["to_run"]) == (1, 4)
    assert run_owes(path, uri) == 4


def test_grid_sweep_owes_what_the_experiment_lacks(tiny_sweep, store, capsys):
    """A grid trial with a result anywhere in the experiment is done, for plan as for run."""
    uri, client, exp = store
    path = tiny_sweep("grid", experiment=EXPERIMENT, grid={"lr": [1e-3, 2e-3, 3e-3, 4e-3]})
    trials = load_sweep(str(path)).trials()
    record(client, exp, "other", [(trials[0].hash, "finished"), ("f" * 16, "finished"), ("a" * 16, "diverged")])
    record(client, exp, "grid", [(trials[1].hash, "diverged"), (trials[2].hash, "failed")])
    totals = plan_totals(path, uri, capsys)
    assert (totals["done"], totals["to_run"]) == (2, 2)
    assert run_owes(path, uri) == 2
