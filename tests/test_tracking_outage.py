"""Tracking outages (issue 9): training never waits for MLflow; reports are queued, sent in order
and exactly once when it returns; the sweep stops with exit 1 (nothing lost) only after a grace
period; read-only commands fail in seconds against a dead server."""
from __future__ import annotations

import threading
import time

import pytest

from helpers import assert_history_matches_reports, journal, start_scalelab, stop_group, sweep_runs
from orchestrator.outbox import Outbox


def test_outbox_keeps_order_through_an_outage_and_reports_it():
    up = threading.Event()
    up.set()
    sent, notes = [], []

    def write(i):
        def fn():
            if not up.is_set():
                raise ConnectionError("Connection refused")
            sent.append(i)
        return fn

    box = Outbox(grace_s=60, on_change=notes.append)
    box.put(write(0))
    assert box.drain()
    up.clear()
    for i in range(1, 6):
        box.put(write(i))      # never blocks the caller
    time.sleep(1.0)
    assert box.pending == 5 and "MLflow unreachable since" in box.note() and "5 reports queued" in box.note()
    up.set()
    assert box.drain()
    assert sent == [0, 1, 2, 3, 4, 5] and box.note() == ""
    assert notes[0].startswith("MLflow unreachable since") and notes[-1].startswith("MLflow reachable again")
    import pickle
    assert pickle.loads(pickle.dumps(box)) is box   # Tune's copies of a callback share it
    box.close()


def test_outbox_gives_up_after_the_grace_period():
    box = Outbox(grace_s=0.5)
    box.put(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    t0 = time.time()
    assert not box.drain() and box.expired and box.pending == 1
    assert time.time() - t0 < 10
    box.close()


@pytest.mark.parametrize("argv", [["report", "e"], ["export", "e", "x.parquet"], ["plan", "SWEEP"]])
def test_read_only_commands_fail_fast_against_a_dead_server(argv, tmp_path, tiny_sweep, monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    argv = [str(tiny_sweep("ro")) if a == "SWEEP" else a for a in argv]
    t0 = time.time()
    assert main(argv + ["--tracking-uri", "http://127.0.0.1:1"]) != 0
    assert time.time() - t0 < 15
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]   # plan says what it checks first
    assert len(errors) == 1 and "unreachable" in errors[0] and "Traceback" not in "".join(err), err


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_server_outage_mid_sweep_loses_nothing_and_does_not_slow_training(restartable_mlflow_server, tmp_path,
                                                                          tiny_sweep):
    """The MLflow server dies mid-trial for longer than the client's retry window, then comes
    back: the run exits 0, every journaled report is in MLflow exactly once at its step, the
    progress said so while it was down, and the trial's own clock did not stop for tracking."""
    from mlflow.tracking import MlflowClient

    server = restartable_mlflow_server
    outage_s = 12.0   # + the restart: > the run's MLflow client window (1 retry, 10 s timeout)
    sweep = tiny_sweep("outage", base={"steps": 4000, "eval_interval": 50})   # 12 s+ of training
    storage = tmp_path / "store"
    log = tmp_path / "run.log"
    proc = start_scalelab(["run", str(sweep), "--tracking-uri", server.uri, "--storage", str(storage),
                           "--num-cpus", "1", "--tracking-grace", "600"], tmp_path, log)
    try:
        client = MlflowClient(tracking_uri=server.uri)
        deadline = time.time() + 180
        while time.time() < deadline:      # the first reports are in MLflow: training is under way
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id], "tags.`scalelab.kind` = 'trial'") if exp else []
            if runs and "train_loss" in runs[0].data.metrics:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        else:
            pytest.fail("no report reached MLflow:\n" + log.read_text())
        server.stop(grace=0)   # a crash, at once: the trial is still early
        down_at = time.time()
        time.sleep(outage_s)
        server.start()
        up_at = time.time()
        assert proc.wait(timeout=240) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            stop_group(proc, grace=0)
    out = log.read_text()
    assert "MLflow unreachable since" in out and "reports queued" in out, out
    assert "Traceback" not in out, out

    client, _, (run,) = sweep_runs(server.uri, "outage")
    assert run.data.tags["scalelab.outcome"] == "finished"
    reports = journal(storage, "outage", run.data.tags["scalelab.trial_hash"])
    # 0 points lost, none twice
    assert_history_matches_reports(client, run, reports, keys=("train_loss", "val_loss", "final_val_loss"))

    # Training went on while the server was down: reports were stamped during the outage, no gap
    # between two reports comes near the outage, and the trial's own clock (wall_time_s) is about
    # what its pace outside the outage predicts.
    stamps = [e["ts"] / 1000 for e in reports if not e["metrics"].get("final")]
    assert any(down_at < t < up_at for t in stamps), "the trial did not train during the outage"
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < outage_s / 2, gaps
    pace = sorted(gaps)[len(gaps) // 2]                    # median seconds per report
    expected_wall = pace * len(stamps)
    assert run.data.metrics["wall_time_s"] < 2 * expected_wall + 10, (run.data.metrics["wall_time_s"], expected_wall)


def test_an_outage_past_the_grace_period_stops_the_sweep_and_a_rerun_sends_the_rest(
        ray_local, tracking_uri, tmp_path, tiny_sweep, monkeypatch):
    """Every metric write fails (MLflow "down") for longer than the grace period: run_sweep
    stops with TrackingOutage saying nothing is lost; the same run afterwards sends every
    journaled report, once."""
    import io

    from orchestrator.runner import RunOptions, TrackingOutage, run_sweep
    from orchestrator.spec import load_sweep
    from orchestrator.run_writes import SweepTracker

    spec = load_sweep(str(tiny_sweep("grace", grid={"lr": [0.01, 0.02]})))
    real = SweepTracker.log_report

    def down(self, child, report, ts):
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(SweepTracker, "log_report", down)
    out = io.StringIO()
    opts = RunOptions(tracking_uri=tracking_uri, storage=str(tmp_path / "store"), tracking_grace=2, out=out)
    with pytest.raises(TrackingOutage, match="Nothing is lost") as err:
        run_sweep(spec, opts)
    assert "unreachable for more than" in str(err.value) and "MLflow unreachable since" in out.getvalue()

    monkeypatch.setattr(SweepTracker, "log_report", real)
    summary = run_sweep(load_sweep(str(tiny_sweep("grace", grid={"lr": [0.01, 0.02]}))),
                        RunOptions(tracking_uri=tracking_uri, storage=str(tmp_path / "store"), out=io.StringIO()))
    assert summary.count("finished") == 2
    client, _, runs = sweep_runs(tracking_uri, "grace")
    assert len(runs) == 2
    for run in runs:
        reports = journal(tmp_path / "store", "grace", run.data.tags["scalelab.trial_hash"])
        steps = [e["metrics"]["step"] for e in reports if "train_loss" in e["metrics"]]
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(h.step for h in history) == sorted(set(steps))
