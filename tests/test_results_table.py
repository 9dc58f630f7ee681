"""The results table (`scalelab status SWEEP.yaml | EXPERIMENT`, and the end of `scalelab run`):
rows read back from a real SQLite MLflow store populated as `scalelab run` would; no Ray."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.layout import KIND_SWEEP, KIND_TRIAL, TAG_HASH, TAG_IDENTITY, TAG_KIND, TAG_LABEL, TAG_OUTCOME, \
    TAG_PARENT, TAG_SWEEP
from orchestrator.results_table import format_rows, sweep_rows, trial_rows
from orchestrator.spec import load_sweep
from orchestrator.tracking_query import trial_runs
from orchestrator.trial import IDENTITY_VERSION
from trainer import metrics as m

EXPERIMENT = "table"


def record(client, exp_id: str, sweep: str, trial, outcome: str, final: float | None, **params) -> None:
    """A trial run as SweepTracker leaves it: identity tags, params, final metrics."""
    parent = client.search_runs([exp_id], f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = '{KIND_SWEEP}'")
    parent_id = (parent[0] if parent else client.create_run(exp_id, tags={TAG_KIND: KIND_SWEEP, TAG_SWEEP: sweep})
                 ).info.run_id
    run = client.create_run(exp_id, run_name=trial.label, tags={
        TAG_PARENT: parent_id, TAG_KIND: KIND_TRIAL, TAG_SWEEP: sweep, TAG_HASH: trial.hash,
        TAG_OUTCOME: outcome, TAG_LABEL: trial.label, TAG_IDENTITY: str(IDENTITY_VERSION)})
    cfg = trial.config
    logged = {"d_model": str(cfg.d_model), "lr": str(cfg.lr), "seed": str(cfg.seed),
              "parametrization": "mup" if cfg.scheme == "mup" else cfg.scheme, **params}
    for key, value in logged.items():
        client.log_param(run.info.run_id, key, value)
    if final is not None:
        client.log_metric(run.info.run_id, m.FINAL_VAL_LOSS, final)
        client.log_metric(run.info.run_id, m.MIN_VAL_LOSS, final - 0.1)
    else:
        client.log_metric(run.info.run_id, m.FINAL_VAL_LOSS, float("nan"))
    client.log_metric(run.info.run_id, m.TOKENS_PER_S, 1234.0)
    client.log_metric(run.info.run_id, m.WALL_TIME_S, 75.0)
    client.set_terminated(run.info.run_id, "FAILED" if outcome == "failed" else "FINISHED")


@pytest.fixture
def filled(tiny_sweep, tracking_uri):
    """A 2 lr × 2 seed grid: one diverged, one failed, two finished; another sweep's run, at
    another width, alongside."""
    path = tiny_sweep("grid", experiment=EXPERIMENT, tracking_uri=tracking_uri, seeds=[0, 1],
                      grid={"lr": [1e-3, 3e-3]})
    trials = {(t.config.lr, t.config.seed): t for t in load_sweep(str(path)).trials()}
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.create_experiment(EXPERIMENT)
    record(client, exp, "grid", trials[1e-3, 0], "finished", 3.5)
    record(client, exp, "grid", trials[3e-3, 0], "finished", 3.2)
    record(client, exp, "grid", trials[1e-3, 1], "diverged", None)
    record(client, exp, "grid", trials[3e-3, 1], "failed", None)
    record(client, exp, "other", trials[1e-3, 0], "finished", 3.0, d_model="64")
    return path, tracking_uri


def test_rows_sorted_and_best_marked(filled):
    path, uri = filled
    rows = sweep_rows(uri, load_sweep(str(path)))
    assert [r["final_val_loss"] for r in rows] == [3.2, 3.5, None, None]
    assert [r["best"] for r in rows] == [True, False, False, False]
    first = rows[0]
    assert first["swept"] == {"lr": "0.003", "seed": "0"}
    assert (first["outcome"], first["width"], first["tokens_per_s"], first["train_seconds"]) == \
        ("finished", 32, 1234.0, 75.0)
    assert first["best_val_loss"] == pytest.approx(3.1)
    assert {r["outcome"] for r in rows[2:]} == {"diverged", "failed"}


def test_experiment_rows_cover_every_sweep(filled):
    """Without a sweep file: every trial of the experiment; the swept keys are the varying params."""
    _, uri = filled
    rows = trial_rows(trial_runs(uri, EXPERIMENT))
    assert len(rows) == 5
    assert [r["best"] for r in rows][:2] == [True, True]  # d=64 (the other sweep's) and d=32
    assert set(rows[0]["swept"]) == {"d_model", "lr", "seed"}


def test_text_table_marks_best(filled):
    path, uri = filled
    text = format_rows(sweep_rows(uri, load_sweep(str(path))))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["trial", "lr", "seed"]
    assert lines[1].startswith("*") and "3.2000" in lines[1] and "1m15s" in lines[1]
    assert "diverged" in text and "failed" in text
    assert format_rows([]) == "no trial runs recorded yet"


def test_status_command_sweep_and_experiment(filled, capsys):
    path, uri = filled
    assert main(["status", str(path)]) == 0  # the sweep's tracking_uri
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("*")
    assert main(["status", EXPERIMENT, "--tracking-uri", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and rows[0]["final_val_loss"] == 3.0


def test_status_unknown_name_says_what_it_takes(tracking_uri, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["status", "nope", "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert "neither a sweep file nor an MLflow experiment" in err and "--address" in err


def test_a_limited_table_keeps_the_best_rows_and_every_marked_one():
    from orchestrator.results_table import format_rows
    rows = [{"best": i in (0, 7), "label": f"t{i}", "swept": {"lr": i}, "outcome": "finished",
             "final_val_loss": 1.0 + i, "best_val_loss": 1.0 + i, "tokens_per_s": 10.0, "train_seconds": 5.0}
            for i in range(10)]
    text = format_rows(rows, limit=3)
    assert "t0" in text and "t2" in text and "t7" in text and "t5" not in text
    assert "and 6 more trials" in text
