"""What a researcher sees in MLflow without Ray: the parent run's answer (settings as params, the
sweep file, the results table as an MLflow table, best metrics; refreshed, never duplicated), a
trial run's honest lifecycle (SCHEDULED while queued, RUNNING while training, then FINISHED) and
its provenance tags, and `scalelab submit`'s check of the cluster's Python (a fake job client;
the real cluster: tests/test_cluster.py). Against a real SQLite MLflow store."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import write_sweep
from orchestrator import jobs, sweep_answer
from orchestrator.cli import main
from orchestrator.layout import (BEST_METRIC, RESULTS_TABLE_ARTIFACT, SWEEP_ARTIFACT, TAG_BEST_RUN, TAG_BEST_TRIAL,
                                 TAG_GIT_COMMIT, TAG_HEARTBEAT, TAG_LOGGED_ARTIFACTS, TAG_NOTE, TAG_OWNER,
                                 TAG_RAY_JOB, TAG_REPLACES, TAG_TRAINING_STARTED)
from orchestrator.run_writes import RAY_JOB_CONFIG_ENV, SweepTracker, ray_job_id
from orchestrator.spec import load_sweep
from orchestrator.tracking_query import trial_runs
from trainer.config import UserError


def row(label, parametrization, width, final, outcome="finished", lr="0.001", run_id=None):
    return {"label": label, "parametrization": parametrization, "width": width, "swept": {"lr": lr},
            "outcome": outcome, "final_val_loss": final, "best_val_loss": final, "tokens_per_s": 1000.0,
            "train_seconds": 12.0, "run_id": run_id or f"run-{label}", "best": False}


def marked(rows):
    for r in rows:
        r["best"] = r["label"] in ("a", "c")
    return rows


ROWS = [row("a", "mup+vector", 64, 2.5), row("b", "mup+vector", 64, 2.7, lr="0.003"), row("c", "sp", 64, 2.6),
        row("d", "sp", 64, None, outcome="failed")]


# --- the answer as data ------------------------------------------------------------------------

def test_sweep_params_name_the_fixed_settings_and_the_swept_values(tmp_path):
    path = write_sweep(tmp_path, "params", zip={"scheme": ["sp", "mup"], "multipliers": ["none", "vector"]},
                       grid={"lr": [1e-3, 3e-3]}, seeds=[0, 1])
    spec = load_sweep(str(path))
    params = sweep_answer.sweep_params(spec)
    assert params["grid.lr"] == "1e-3,3e-3" and params["zip.scheme"] == "sp,mup"
    assert params["zip.multipliers"] == "none,vector"
    assert params["seeds"] == "0,1" and params["mode"] == "grid"
    assert params["steps"] == str(spec.base["steps"])  # a fixed setting: the trials' own param name


def test_table_is_mlflows_table_format_and_best_metrics_cover_each_group():
    rows = marked([dict(r) for r in ROWS])
    table = sweep_answer.table(rows)
    assert table["columns"] == ["best", "label", "lr", "outcome", "final_val_loss", "best_val_loss", "tokens_per_s",
                                "train_seconds", "parametrization", "width", "run_id"]
    assert table["data"][0] == [True, "a", "0.001", "finished", 2.5, 2.5, 1000.0, 12.0, "mup+vector", 64, "run-a"]
    assert table["data"][3][4] is None  # a failed trial: no loss (JSON null)
    assert sweep_answer.best_metrics(rows) == {f"{BEST_METRIC}/mup_vector/d64": 2.5, f"{BEST_METRIC}/sp/d64": 2.6,
                                              BEST_METRIC: 2.5}
    assert sweep_answer.best_row(rows)["label"] == "a"
    assert sweep_answer.best_metrics([]) == {} and sweep_answer.best_row([]) is None


# --- the parent run in a real store --------------------------------------------------------------

def test_parent_carries_the_answer_and_a_rerun_refreshes_it(tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # MLflow's load_table searches the default store
    path = write_sweep(tmp_path, "answer", grid={"lr": [1e-3, 3e-3]}, description="does lr matter here?")
    spec = load_sweep(str(path))
    tracker = SweepTracker(tracking_uri, "answer", "answer", "grid")
    rows = marked([dict(r) for r in ROWS])
    assert tracker.record_answer(spec, rows) == []
    client, parent = tracker.client, tracker.parent_id
    run = client.get_run(parent)
    assert run.data.params["grid.lr"] == "1e-3,3e-3" and run.data.params["mode"] == "grid"
    assert run.data.metrics[BEST_METRIC] == 2.5 and run.data.metrics[f"{BEST_METRIC}/sp/d64"] == 2.6
    assert run.data.tags[TAG_BEST_TRIAL] == "a" and run.data.tags[TAG_BEST_RUN] == "run-a"
    assert run.data.tags[TAG_NOTE] == "does lr matter here?"
    assert {"path": RESULTS_TABLE_ARTIFACT, "type": "table"} in json.loads(run.data.tags[TAG_LOGGED_ARTIFACTS])
    assert Path(client.download_artifacts(parent, SWEEP_ARTIFACT)).read_text() == path.read_text()
    loaded = client.load_table(tracker.experiment_id, RESULTS_TABLE_ARTIFACT, run_ids=[parent])  # MLflow reads it
    assert list(loaded["label"]) == ["a", "b", "c", "d"] and list(loaded["best"]) == [True, False, True, False]

    # again, with one trial more and the file changed: artifacts replaced, only changed metrics logged
    rows.append(row("e", "sp", 64, 2.4, lr="0.003"))
    rows[2]["best"], rows[4]["best"] = False, True
    path.write_text(path.read_text().replace("0.003", "0.01"))
    again = SweepTracker(tracking_uri, "answer", "answer", "grid")
    assert again.parent_id == parent
    assert again.record_answer(load_sweep(str(path)), rows) == ["grid.lr"]  # params cannot change: said
    run = client.get_run(parent)
    assert run.data.metrics[BEST_METRIC] == 2.4 and run.data.tags[TAG_BEST_TRIAL] == "e"
    assert len(client.get_metric_history(parent, f"{BEST_METRIC}/mup_vector/d64")) == 1  # unchanged: no new row
    assert [m.value for m in client.get_metric_history(parent, BEST_METRIC)] == [2.5, 2.4]
    loaded = client.load_table(tracker.experiment_id, RESULTS_TABLE_ARTIFACT, run_ids=[parent])
    assert len(loaded) == 5  # replaced, not appended
    assert "0.01" in Path(client.download_artifacts(parent, SWEEP_ARTIFACT)).read_text()
    assert json.loads(run.data.tags[TAG_LOGGED_ARTIFACTS]).count({"path": RESULTS_TABLE_ARTIFACT, "type": "table"}) == 1


# --- a trial run's lifecycle and provenance -----------------------------------------------------

def test_a_claimed_trial_is_scheduled_until_it_trains(tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALELAB_GIT_COMMIT", "0" * 40)
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"metadata": {"job_submission_id": "scalelab-x-1"}}))
    spec = load_sweep(str(write_sweep(tmp_path, "life", grid={"lr": [1e-3]})))
    trial = spec.trials()[0]
    tracker = SweepTracker(tracking_uri, "life", "life", "grid")
    mine, held, done = tracker.claim([trial])
    assert mine == [trial] and not held and not done
    run_id = tracker.children[trial.hash].run_id
    queued = tracker.client.get_run(run_id)
    assert queued.info.status == "SCHEDULED"
    tags = queued.data.tags
    assert tags[TAG_NOTE] == f"{trial.label} — sweep life"
    assert tags[TAG_GIT_COMMIT] == "0" * 40 and tags[TAG_RAY_JOB] == "scalelab-x-1"
    # released before it trained (interrupted), then claimed by a rerun: queued still
    tracker.heartbeat(release=True)
    tracker = SweepTracker(tracking_uri, "life", "life", "grid")
    assert tracker.claim([trial])[0] == [trial] and tracker.children[trial.hash].run_id == run_id
    assert tracker.client.get_run(run_id).info.status == "SCHEDULED"

    time.sleep(0.3)  # queued a while
    heartbeat_ids = list(tracker.claimed)  # what the driver's Heartbeat renews (runner.py)
    child = tracker.start_child(trial, n_params=None)
    started = tracker.client.get_run(child.run_id)
    # the claim's run is replaced by one that starts now: MLflow cannot move a start time
    assert child.run_id != run_id and started.info.status == "RUNNING"
    assert tracker.client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert int(started.data.tags[TAG_TRAINING_STARTED]) == started.info.start_time
    assert started.info.start_time >= queued.info.start_time + 300
    assert started.data.tags[TAG_REPLACES] == run_id and started.data.tags[TAG_NOTE] == tags[TAG_NOTE]
    assert started.data.tags[TAG_OWNER] == tracker.owner and started.data.tags[TAG_GIT_COMMIT] == "0" * 40
    # the claim moved with it: a copy of the tracker renews and releases it on the new run
    assert heartbeat_ids == [run_id]
    assert tracker.heartbeat(heartbeat_ids) == [] and tracker.taken_over(trial.hash) is None
    assert SweepTracker(tracking_uri, "life", "life", "grid").children[trial.hash].run_id == child.run_id
    time.sleep(0.5)  # training
    tracker.finish_child(child, "finished", multipliers=[])
    ended = tracker.client.get_run(child.run_id)
    assert ended.info.status == "FINISHED"
    assert 0.5 <= (ended.info.end_time - ended.info.start_time) / 1000 < 5.0  # the UI's Duration: training time
    tracker.heartbeat(heartbeat_ids, release=True)
    assert tracker.client.get_run(child.run_id).data.tags[TAG_HEARTBEAT] == "0"


def test_a_trial_that_trained_before_keeps_its_run(tracking_uri, tmp_path):
    """A rerun of a trial that has results (it failed, or was cut short) keeps its run: RUNNING
    again, its start the first attempt's."""
    spec = load_sweep(str(write_sweep(tmp_path, "again", grid={"lr": [1e-3]})))
    trial = spec.trials()[0]
    tracker = SweepTracker(tracking_uri, "again", "again", "grid")
    tracker.claim([trial])
    child = tracker.start_child(trial, n_params=None)
    tracker.finish_child(child, "failed", error="boom")
    tracker.heartbeat(release=True)
    tracker = SweepTracker(tracking_uri, "again", "again", "grid")
    assert tracker.claim([trial])[0] == [trial]
    assert tracker.start_child(trial, n_params=None).run_id == child.run_id
    assert tracker.client.get_run(child.run_id).info.status == "RUNNING"


def test_a_swap_cut_short_by_a_crash_leaves_one_run(tracking_uri, tmp_path, monkeypatch):
    """Killed between creating the training run and deleting the claim's: the claim's run still
    holds the trial; the next claim deletes the stray (unless a live invocation is mid-swap)."""
    spec = load_sweep(str(write_sweep(tmp_path, "crash", grid={"lr": [1e-3]})))
    trial = spec.trials()[0]
    tracker = SweepTracker(tracking_uri, "crash", "crash", "grid")
    tracker.claim([trial])
    claim_run = tracker.children[trial.hash].run_id
    monkeypatch.setattr(tracker.client, "delete_run", lambda run_id: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        tracker.start_child(trial, n_params=None)
    monkeypatch.undo()
    assert len(tracker.child_runs()) == 2
    # what `scalelab status` and the results table read: the trial's run only
    assert [r.info.run_id for r in trial_runs(tracking_uri, "crash", "crash")] == [claim_run]
    # a live rival mid-swap is left alone: reading (or claiming) keeps both, the old one is the trial's
    rival = SweepTracker(tracking_uri, "crash", "crash", "grid")
    assert rival.children[trial.hash].run_id == claim_run
    assert rival.claim([trial])[1] == {trial.hash: tracker.owner} and len(rival.child_runs()) == 2
    tracker.heartbeat(release=True)  # the crashed owner's claim ends
    rival = SweepTracker(tracking_uri, "crash", "crash", "grid")
    assert rival.claim([trial])[0] == [trial]
    assert [r.info.run_id for r in rival.child_runs()] == [claim_run]


def test_a_run_made_when_training_starts_starts_then(tracking_uri):
    """Search sweeps (no claim per trial): the run is created RUNNING when training starts."""
    from test_run_units import fake_trial

    tracker = SweepTracker(tracking_uri, "life", "search-life", "search")
    before = int(time.time() * 1000)
    child = tracker.start_child(fake_trial("s"), n_params=None)
    run = tracker.client.get_run(child.run_id)
    assert run.info.status == "RUNNING" and run.info.start_time >= before
    assert int(run.data.tags[TAG_TRAINING_STARTED]) == run.info.start_time


def test_ray_job_id_comes_from_rays_job_config(monkeypatch):
    monkeypatch.delenv(RAY_JOB_CONFIG_ENV, raising=False)
    assert ray_job_id() is None
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, "not json")
    assert ray_job_id() is None
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "j-1"}}))
    assert ray_job_id() == "j-1"


# --- submit: the cluster's Python ------------------------------------------------------------------

class FakeJobs:
    """A Ray job client whose check job ends in `status` with `logs` (or never ends)."""

    def __init__(self, status: str, logs: str = ""):
        self.status, self.logs, self.submitted, self.stopped = status, logs, [], []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_status(self, job_id):
        return self.status

    def get_job_logs(self, job_id):
        return self.logs

    def get_job_info(self, job_id):
        return SimpleNamespace(message="runtime env setup failed")

    def stop_job(self, job_id):
        self.stopped.append(job_id)


def test_check_passes_fails_with_the_fix_or_gives_up_with_a_warning(capsys):
    ok = FakeJobs("SUCCEEDED")
    jobs.check_cluster_python(ok, "j", {"working_dir": "."}, "http://127.0.0.1:9")
    assert ok.submitted[0]["entrypoint"] == "python -c 'import orchestrator.runner, trainer.loop'"
    assert ok.submitted[0]["submission_id"] == "j-check" and ok.submitted[0]["runtime_env"] == {"working_dir": "."}

    broken = FakeJobs("FAILED", "Traceback (most recent call last):\n  ...\n"
                                "ModuleNotFoundError: No module named 'torch'\n")
    with pytest.raises(UserError) as err:
        jobs.check_cluster_python(broken, "j", {}, "http://127.0.0.1:9")
    assert str(err.value).startswith("the cluster's Python cannot import the project (ModuleNotFoundError: No "
                                     "module named 'torch'); install the project on every node")
    with pytest.raises(UserError, match=r"\(runtime env setup failed\)"):
        jobs.check_cluster_python(FakeJobs("FAILED"), "j", {}, "http://127.0.0.1:9")

    slow = FakeJobs("PENDING")
    jobs.check_cluster_python(slow, "j", {}, "http://127.0.0.1:9", timeout=0.1)
    assert slow.stopped == ["j-check"] and "did not end within" in capsys.readouterr().err


def test_submit_stops_with_the_fix_when_the_cluster_cannot_import_the_project(tmp_path, monkeypatch, capsys):
    broken = FakeJobs("FAILED", "ModuleNotFoundError: No module named 'mlflow'\n")
    monkeypatch.setattr(jobs, "client", lambda address: broken)
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, "check")
    code = main(["submit", "check.yaml", "--address", "http://127.0.0.1:9", "--tracking-uri", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "install the project on every node" in err and len(err.strip().splitlines()) == 1
    assert [s["submission_id"].endswith("-check") for s in broken.submitted] == [True]  # the sweep was not sent


def test_a_swap_retried_after_an_outage_makes_one_run(tracking_uri, tmp_path, monkeypatch):
    """MLflow unreachable between the swap's two calls: the outbox retries start_child, which
    reuses the run it made (no second replacement, no empty run left beside the trial's)."""
    spec = load_sweep(str(write_sweep(tmp_path, "outage", grid={"lr": [1e-3]})))
    trial = spec.trials()[0]
    tracker = SweepTracker(tracking_uri, "outage", "outage", "grid")
    tracker.claim([trial])
    claim_run = tracker.children[trial.hash].run_id
    delete = tracker.client.delete_run
    calls = []

    def flaky_delete(run_id):
        calls.append(run_id)
        if len(calls) == 1:
            raise ConnectionError("MLflow unreachable")
        delete(run_id)
    monkeypatch.setattr(tracker.client, "delete_run", flaky_delete)
    with pytest.raises(ConnectionError):
        tracker.start_child(trial, n_params=None)
    child = tracker.start_child(trial, n_params=None)  # the outbox's retry
    assert calls == [claim_run, claim_run]
    assert [r.info.run_id for r in tracker.child_runs()] == [child.run_id] != [claim_run]
    assert tracker.start_child(trial, n_params=None).run_id == child.run_id  # a later retry: same run
