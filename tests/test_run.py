"""Real local sweeps: embedded Ray (one per module) → Tune → MLflow SQLite, then reruns and
injected crashes. Every number checked here comes from the trainer through the whole path."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from helpers import assert_history_matches_reports, journal, sweep_runs, write_sweep
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep
from orchestrator.faults import FAULT_ENV
from trainer.config import TrainConfig
from trainer.estimate import estimate

pytestmark = pytest.mark.timeout(600)


def sweep_opts(uri: str, storage: Path, out=None) -> RunOptions:
    return RunOptions(tracking_uri=uri, storage=str(storage), out=out or io.StringIO())


@pytest.fixture(scope="module")
def grid_run(ray_local, shared_tracking_uri, tmp_path_factory):
    """A 4-trial grid (sp vs mup+vector × 2 LRs) run once for the tests below."""
    folder = tmp_path_factory.mktemp("grid")
    path = write_sweep(folder, "grid-basic", zip={"scheme": ["sp", "mup"], "multipliers": ["none", "vector"]},
                       grid={"lr": [1e-3, 3e-3]}, concurrency=2)
    spec = load_sweep(str(path))
    out = io.StringIO()
    summary = run_sweep(spec, sweep_opts(shared_tracking_uri, folder / "store", out))
    return spec, summary, folder / "store", out.getvalue()


def test_sweep_writes_parent_children_params_metrics_artifacts(grid_run, shared_tracking_uri):
    spec, summary, storage, output = grid_run
    trials = {t.hash: t for t in spec.trials()}
    assert len(trials) == 4
    assert summary.count("finished") == 4 and summary.count("failed") == 0
    client, parents, children = sweep_runs(shared_tracking_uri, "grid-basic")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.data.tags["scalelab.sweep"] == "grid-basic"
    assert sorted(r.data.tags["scalelab.trial_hash"] for r in children) == sorted(trials)
    flops = 0.0
    for run in children:
        tags, trial = run.data.tags, trials[run.data.tags["scalelab.trial_hash"]]
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["scalelab.outcome"] == "finished" and run.info.status == "FINISHED"
        assert tags["scalelab.mode"] == "grid" and tags["scalelab.sweep"] == "grid-basic"
        assert tags["scalelab.code_version"]
        assert "scalelab.error" not in tags
        params = run.data.params
        for key, value in trial.config.model_dump().items():
            expected = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
            assert params[key] == expected, key
        assert params["parametrization"] == ("sp" if trial.config.scheme == "sp" else "mup+vector")
        assert int(params["n_params"]) == estimate(trial.config)["n_params"]
        reports = journal(storage, "grid-basic", trial.hash)
        assert [e["metrics"]["step"] for e in reports] == [10, 20]
        assert_history_matches_reports(client, run, reports)
        flops += run.data.metrics["flops"]
        # artifacts: the resolved config and the final multiplier table
        config_path = client.download_artifacts(run.info.run_id, "config.yaml")
        assert TrainConfig.build(yaml.safe_load(Path(config_path).read_text())) == trial.config
        table = Path(client.download_artifacts(run.info.run_id, "multipliers.csv")).read_text().splitlines()
        assert table[0] == "layer,role,block,kind,mean,rms,min,max,size"
        assert (len(table) > 1) == (trial.config.multipliers == "vector")
    assert parent.data.metrics["tuning_trials"] == 4
    assert parent.data.metrics["tuning_flops"] == pytest.approx(flops)
    assert "4/4 done (4 finished" in output and "best final_val_loss" in output
    table = output[output.index("trial  "):].splitlines()  # the results table, best of each group first
    assert table[0].split()[:4] == ["trial", "lr", "scheme", "multipliers"]
    assert sum(line.startswith("*") for line in table) == 2


def test_parent_run_carries_the_answer_and_trial_runs_their_provenance(grid_run, shared_tracking_uri):
    """What the MLflow UI shows of a sweep: the parent's settings, sweep file, results table and
    best losses; each trial's description, code commit and lifecycle (ended FINISHED)."""
    spec, _, _, output = grid_run
    client, parents, children = sweep_runs(shared_tracking_uri, "grid-basic")
    parent = parents[0]
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags
    assert params["grid.lr"] == "1e-3,3e-3" and params["zip.scheme"] == "sp,mup" and params["mode"] == "grid"
    assert params["steps"] == str(spec.base["steps"])
    sweep_file = Path(client.download_artifacts(parent.info.run_id, "sweep.yaml"))
    assert sweep_file.read_text() == Path(spec.source).read_text()
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "results_table.json")).read_text())
    assert len(table["data"]) == 4 and table["columns"][:2] == ["best", "label"]
    assert {"path": "results_table.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
    finals = {r.data.tags["scalelab.label"]: r.data.metrics["final_val_loss"] for r in children}
    assert metrics["best_final_val_loss"] == pytest.approx(min(finals.values()))
    groups = {k for k in metrics if k.startswith("best_final_val_loss/")}
    assert groups == {"best_final_val_loss/sp/d32", "best_final_val_loss/mup_vector/d32"}
    assert tags["scalelab.best_trial"] == min(finals, key=finals.get)
    for run in children:
        t = run.data.tags
        assert t["mlflow.note.content"] == f"{t['scalelab.label']} — sweep grid-basic"
        assert len(t["mlflow.source.git.commit"]) == 40  # the tests run in a git checkout
        # the claim's queued placeholder was replaced when training began: start time = training start
        assert int(t["scalelab.training_started"]) == run.info.start_time and t["scalelab.replaces"]
        assert run.info.status == "FINISHED" and "scalelab.ray_job_id" not in t  # not a Ray Job


def test_rerun_adds_no_runs(grid_run, shared_tracking_uri):
    spec, _, storage, _ = grid_run
    client, (parent,), before = sweep_runs(shared_tracking_uri, "grid-basic")
    lengths = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "train_loss")) for r in before}
    best_rows = {k: len(client.get_metric_history(parent.info.run_id, k)) for k in parent.data.metrics}
    out = io.StringIO()
    summary = run_sweep(load_sweep(spec.source), sweep_opts(shared_tracking_uri, storage, out))
    assert "4 already done, 0 to run" in out.getvalue()
    assert summary.count("finished") == 4 and summary.ran == 0
    _, parents, after = sweep_runs(shared_tracking_uri, "grid-basic")
    assert len(parents) == 1
    assert sorted(r.info.run_id for r in after) == sorted(lengths)
    assert {r.info.run_id: len(client.get_metric_history(r.info.run_id, "train_loss")) for r in after} == lengths
    # the parent's answer is refreshed, not duplicated
    assert {k: len(client.get_metric_history(parent.info.run_id, k)) for k in best_rows} == best_rows
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "results_table.json")).read_text())
    assert len(table["data"]) == 4


def test_injected_crash_is_retried_and_exhausted_retries_fail(ray_local, shared_tracking_uri, tmp_path,
                                                               tiny_sweep, monkeypatch):
    path = tiny_sweep("faults", grid={"lr": [1e-3, 2e-3, 3e-3, 1.0]}, retries=1, concurrency=2)
    spec = load_sweep(str(path))
    by_lr = {t.config.lr: t.hash for t in spec.trials()}
    retried, broken = by_lr[1e-3], by_lr[2e-3]
    monkeypatch.setenv(FAULT_ENV, f"{retried[:10]}:10,{broken[:10]}:10:always")
    out = io.StringIO()
    summary = run_sweep(spec, sweep_opts(shared_tracking_uri, tmp_path / "store", out))
    assert summary.count("failed") == 1 and summary.count("diverged") == 1 and summary.count("finished") == 2
    client, _, children = sweep_runs(shared_tracking_uri, "faults")
    runs = {r.data.tags["scalelab.trial_hash"]: r for r in children}
    assert len(runs) == len(children) == 4
    # crashed once at step 10, retried from its checkpoint: finished, every step once
    assert runs[retried].data.tags["scalelab.outcome"] == "finished"
    assert (tmp_path / "store" / "trials" / "faults" / retried / "fault-10.count").read_text() == "1"
    assert_history_matches_reports(client, runs[retried], journal(tmp_path / "store", "faults", retried))
    assert [h.step for h in client.get_metric_history(runs[retried].info.run_id, "train_loss")] == [10, 20]
    # crashed on every attempt: failed with the error, after 1 + retries attempts
    failed = runs[broken]
    assert failed.data.tags["scalelab.outcome"] == "failed" and failed.info.status == "FAILED"
    # the retry resumed past step 10 and crashed at its next report: the last error is kept
    assert "InjectedFault: injected fault at step 20" in failed.data.tags["scalelab.error"]
    assert "occurrence 2" in failed.data.tags["scalelab.error"]
    assert (tmp_path / "store" / "trials" / "faults" / broken / "fault-10.count").read_text() == "2"
    # the sweep went on: lr=3e-3 finished, lr=1.0 diverged (a result, not a failure)
    assert runs[by_lr[3e-3]].data.tags["scalelab.outcome"] == "finished"
    diverged = runs[by_lr[1.0]]
    assert diverged.data.tags["scalelab.outcome"] == "diverged" and diverged.info.status == "FINISHED"
    assert "diverged_at_step" in diverged.data.metrics
    assert "failed: sp lr=2e-3" in out.getvalue() and "injected fault" in out.getvalue()

    # a rerun (fault gone) retries only the failed trial, in the same run
    monkeypatch.delenv(FAULT_ENV)
    summary = run_sweep(load_sweep(str(path)), sweep_opts(shared_tracking_uri, tmp_path / "store"))
    assert summary.ran == 1 and summary.count("finished") == 3 and summary.count("failed") == 0
    client, _, children = sweep_runs(shared_tracking_uri, "faults")
    runs = {r.data.tags["scalelab.trial_hash"]: r for r in children}
    assert len(children) == 4
    assert runs[broken].data.tags["scalelab.outcome"] == "finished"
    assert "scalelab.error" not in runs[broken].data.tags
    assert_history_matches_reports(client, runs[broken], journal(tmp_path / "store", "faults", broken))
