"""The pieces of sweep execution that need no Ray: MLflow tracking against a real SQLite store,
the trial journal, fault injection, the searcher objective, job submission settings."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.entities import Metric

from orchestrator import jobs
from orchestrator.faults import InjectedFault, maybe_inject_fault, parse_faults
from orchestrator.trainable import TrialContext, objective_value, set_threads
from orchestrator.trial_folder import Journal, resume_point
from orchestrator.run_writes import SweepTracker, multipliers_csv
from trainer.config import TrainConfig, UserError


def fake_trial(name: str = "t") -> SimpleNamespace:
    cfg = TrainConfig.build({"d_model": 32, "head_dim": 16, "multiplier_overrides": {"head": "scalar"}})
    return SimpleNamespace(hash=f"{name:0<16}"[:16], label=f"label {name}", config=cfg)


def test_reports_are_chunked_to_mlflow_limits_and_never_logged_twice(tracking_uri):
    tracker = SweepTracker(tracking_uri, "units", "sweep-a", "grid")
    child = tracker.start_child(fake_trial(), n_params=123)
    report = {"step": 10, "status": "finished", "final": True, **{f"k/{i}": float(i) for i in range(2500)}}
    assert tracker.log_report(child, report, timestamp_ms=1000)
    run = tracker.client.get_run(child.run_id)
    assert len(run.data.metrics) == 2501                       # 2500 keys + step; no status/final
    assert run.data.metrics["k/2499"] == 2499.0
    assert run.data.tags["scalelab.logged_step"] == "10"
    assert run.data.params["n_params"] == "123" and run.data.params["parametrization"] == "sp"
    assert json.loads(run.data.params["multiplier_overrides"]) == {"head": "scalar"}
    assert not tracker.log_report(child, report, timestamp_ms=2000)   # same step again: skipped

    # a new driver (rerun) finds the same parent and child, and knows which steps are stored
    again = SweepTracker(tracking_uri, "units", "sweep-a", "grid")
    assert again.parent_id == tracker.parent_id
    reopened = again.start_child(fake_trial(), n_params=123)
    assert reopened.run_id == child.run_id
    assert not again.log_report(reopened, report, timestamp_ms=3000)
    assert again.log_report(reopened, {**report, "step": 20}, timestamp_ms=3000)
    assert [m.step for m in again.client.get_metric_history(child.run_id, "k/7")] == [10, 20]
    assert SweepTracker(tracking_uri, "units", "sweep-b", "grid").parent_id != tracker.parent_id


def test_identical_metric_rows_are_stored_once(tracking_uri):
    """What a replay after a crash relies on: same key, value, step and timestamp → one row."""
    tracker = SweepTracker(tracking_uri, "units", "sweep-a", "grid")
    child = tracker.start_child(fake_trial("dup"), n_params=None)
    for _ in range(2):
        tracker.client.log_batch(child.run_id, metrics=[Metric("loss", 1.5, 42, 3)], synchronous=True)
    assert len(tracker.client.get_metric_history(child.run_id, "loss")) == 1


def test_failed_then_finished_trial_loses_its_error_tag(tracking_uri):
    tracker = SweepTracker(tracking_uri, "units", "sweep-c", "grid")
    child = tracker.start_child(fake_trial("f"), n_params=None)
    tracker.finish_child(child, "failed", error="Traceback...\nRuntimeError: boom")
    run = tracker.client.get_run(child.run_id)
    assert run.info.status == "FAILED" and run.data.tags["scalelab.error"].endswith("boom")
    tracker.finish_child(child, "finished", multipliers=[])
    run = tracker.client.get_run(child.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["scalelab.outcome"] == "finished"
    assert "scalelab.error" not in run.data.tags


def test_multipliers_csv_has_the_contract_columns():
    rows = [{"layer": "attn_q.0", "role": "attn_q", "block": 0, "kind": "vector", "mean": 1.0, "rms": 1.1,
             "min": 0.9, "max": 1.2, "size": 64}]
    lines = multipliers_csv(rows).splitlines()
    assert lines == ["layer,role,block,kind,mean,rms,min,max,size", "attn_q.0,attn_q,0,vector,1.0,1.1,0.9,1.2,64"]


# --- journal and resume point ----------------------------------------------------------------

def test_resume_point_is_the_newest_journaled_checkpoint_on_disk(tmp_path):
    journal = Journal(tmp_path / "reports.jsonl")
    for step in (10, 20, 30):
        journal.append({"metrics": {"step": step}, "checkpoint": f"checkpoints/step_{step:08d}"})
    with open(journal.path, "a") as fh:
        fh.write('{"metrics": {"step": 40')                  # cut short by a kill
    entries = journal.read()
    assert [e["metrics"]["step"] for e in entries] == [10, 20, 30]
    for step in (10, 20):                                     # step 30's checkpoint was pruned/lost
        (tmp_path / f"checkpoints/step_{step:08d}").mkdir(parents=True)
        (tmp_path / f"checkpoints/step_{step:08d}/state.pt").write_bytes(b"x")
    path, replay = resume_point(entries, tmp_path)
    assert path == str(tmp_path / "checkpoints/step_00000020")
    assert [e["metrics"]["step"] for e in replay] == [10, 20]
    assert resume_point(entries, tmp_path / "elsewhere") == (None, [])


def test_fault_injection_fires_the_asked_number_of_times(tmp_path):
    assert parse_faults("abc:10, def:20:3 ,ghi:5:always,bad") == [("abc", 10, 1), ("def", 20, 3),
                                                                  ("ghi", 5, math.inf)]
    maybe_inject_fault("abc:10", "abcdef", 5, tmp_path)      # before the step: nothing
    maybe_inject_fault("xyz:10", "abcdef", 10, tmp_path)     # other trial: nothing
    with pytest.raises(InjectedFault, match="step 10"):
        maybe_inject_fault("abc:10", "abcdef", 10, tmp_path)
    maybe_inject_fault("abc:10", "abcdef", 20, tmp_path)     # once only
    for _ in range(3):
        with pytest.raises(InjectedFault):
            maybe_inject_fault("abc:30:always", "abcdef", 40, tmp_path)


def test_objective_for_the_searcher():
    ctx = TrialContext(trials_root="x", objective="final_val_loss", objective_mode="min")
    assert objective_value({"val_loss": 3.0}, ctx) == 3.0                       # not final yet
    assert objective_value({"val_loss": 3.0, "final_val_loss": 2.5}, ctx) == 2.5
    assert objective_value({"val_loss": math.nan, "final_val_loss": math.nan}, ctx) == math.inf
    ctx.objective_mode = "max"
    assert objective_value({"final_val_loss": math.nan}, ctx) == -math.inf


def test_threads_follow_the_cpu_allocation_unless_pinned():
    before = torch.get_num_threads()
    try:
        set_threads(TrainConfig.build({"threads": 0}), 2.0)
        assert torch.get_num_threads() == 2
        set_threads(TrainConfig.build({"threads": 1}), 4.0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- submission settings ---------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "file:///tmp/mlruns", "mlruns", "./x.db"])
def test_submit_refuses_local_tracking(uri):
    with pytest.raises(UserError, match="local file"):
        jobs.check_remote_tracking(uri)


def test_submit_accepts_server_tracking():
    jobs.check_remote_tracking("http://127.0.0.2:5000")
    jobs.check_remote_tracking("https://127.0.0.3")


def test_runtime_env_uploads_the_project_without_local_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALELAB_CODE_VERSION", "v-test")
    env = jobs.runtime_env(tmp_path)
    assert env["working_dir"] == str(tmp_path)
    for name in (".venv", ".git", "mlflow.db", ".scalelab", "reports"):
        assert name in env["excludes"]
    assert env["env_vars"]["SCALELAB_CODE_VERSION"] == "v-test"
    # the code is not in tmp_path, so it travels as py_modules
    assert {Path(p).name for p in env["py_modules"]} >= {"trainer", "orchestrator"}
    project = Path(jobs.__file__).resolve().parent.parent
    assert "py_modules" not in jobs.runtime_env(project)


def test_entrypoint_quotes_and_connects_to_the_cluster():
    cmd = jobs.entrypoint("my sweeps/a.yaml", "http://127.0.0.2:5000", None, 4)
    assert cmd == ("python -m orchestrator.cli run 'my sweeps/a.yaml' --address auto "
                   "--tracking-uri http://127.0.0.2:5000 --max-concurrent 4")


def test_submit_passes_fuse_on_to_the_run_on_the_cluster(tmp_path, capsys):
    from orchestrator.cli import main

    assert jobs.entrypoint("a.yaml", "http://127.0.0.2:5000", None, None, fuse=8).endswith("--fuse 8")
    sweep = tmp_path / "a.yaml"
    sweep.write_text("name: a\nbase: {steps: 100}\n")
    assert main(["submit", str(sweep), "--tracking-uri", "http://127.0.0.1:1", "--working-dir", str(tmp_path),
                 "--fuse", "off", "--dry-run"]) == 0
    assert "--fuse off" in capsys.readouterr().out
    assert main(["submit", str(sweep), "--tracking-uri", "http://127.0.0.1:1", "--working-dir", str(tmp_path),
                 "--fuse", "many", "--dry-run"]) == 2


def test_auth_token_from_env_or_file(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "environ", {"HOME": str(tmp_path)})
    assert jobs.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert jobs.auth_headers() == {"Authorization": "Bearer from-file"}
    assert "RAY_AUTH_MODE" not in os.environ  # a process-wide setting would leak into later ray.init()
    os.environ["RAY_AUTH_TOKEN"] = "".join(["from", "-env"])  # not a literal: `submit` would read one as a committed token
    assert jobs.auth_headers() == {"Authorization": "Bearer from-env"}


@pytest.mark.parametrize("work,eta", [
    ({"a": 10.0, "b": 90.0}, "ETA 1m30s"),  # compute-bound: the wide trial takes 9x the small one
    ({"a": 1.0, "b": 9.0}, "ETA 18s"),      # small took 10 s for 1 s of compute: 9 s overhead each
])
def test_progress_eta_is_weighted_by_estimated_work(monkeypatch, work, eta):
    """Trials run small-to-large: after the small one took 10 s, a count-based ETA (1 of 2
    done) would promise 10 s. The ETA weights each trial by its estimated compute plus the
    per-trial overhead observed so far."""
    import io

    from orchestrator import progress

    trials = {"a": SimpleNamespace(hash="a", label="small"), "b": SimpleNamespace(hash="b", label="wide")}
    out = io.StringIO()
    clock = iter([1000.0, 1010.0, 1010.0, 1010.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    printer = progress.ProgressPrinter("s", 2, lambda config: trials[config["h"]], "final_val_loss", "min",
                                       out=out, work=work)
    small = SimpleNamespace(trial_id="t1", config={"h": "a"})
    printer.on_trial_start(0, [], small)
    printer.on_trial_result(0, [], small, {"scalelab": {"metrics": {"final": True, "status": "finished",
                                                                    "final_val_loss": 2.0}}})
    assert eta in out.getvalue().splitlines()[-1], out.getvalue()


def test_progress_eta_fits_overhead_and_speed_once_sizes_differ(monkeypatch):
    """Estimates 10 s and 30 s took 6 s and 10 s: duration = 4 + 0.2·estimate, so the last
    trial (estimate 90 s) costs 22 s against 16 s done in 16 s of wall time: ETA 22 s. The
    median-overhead model (overheads clipped to 0) would say 16 × 90/40 = 36 s."""
    import io

    from orchestrator import progress

    trials = {h: SimpleNamespace(hash=h, label=h) for h in "acb"}
    out = io.StringIO()
    clock = iter([1000.0, 1006.0, 1006.0, 1006.0, 1006.0, 1016.0, 1016.0])  # each start line reads it too
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    printer = progress.ProgressPrinter("s", 3, lambda config: trials[config["h"]], "final_val_loss", "min",
                                       out=out, work={"a": 10.0, "c": 30.0, "b": 90.0})
    final = {"scalelab": {"metrics": {"final": True, "status": "finished", "final_val_loss": 2.0}}}
    for trial_id, h in (("t1", "a"), ("t2", "c")):
        trial = SimpleNamespace(trial_id=trial_id, config={"h": h})
        printer.on_trial_start(0, [], trial)
        printer.on_trial_result(0, [], trial, final)
    assert "ETA 22s" in out.getvalue().splitlines()[-1], out.getvalue()


def test_a_malformed_fault_spec_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    """A typo in SCALELAB_FAULT_INJECT is a usage error at start (exit 2, one line), not trials
    failing after their retries; workers skip what they cannot parse."""
    from orchestrator.cli import main
    from orchestrator.faults import check_faults

    assert parse_faults("abc:x,def:3") == [("def", 3, 1)]
    check_faults("abc:10,def:20:3,ghi:5:always")
    for bad in ("abc:x", "abc", "abc:10:zero", ":10", "abc:1:2:3"):
        with pytest.raises(UserError, match="SCALELAB_FAULT_INJECT"):
            check_faults(bad)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {d_model: 32, head_dim: 16, n_layers: 1, steps: 2}\n")
    monkeypatch.setenv("SCALELAB_FAULT_INJECT", "abc:ten")
    assert main(["run", str(sweep), "--tracking-uri", "sqlite:///" + str(tmp_path / "m.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SCALELAB_FAULT_INJECT" in err[0]
    assert not (tmp_path / "m.db").exists()


def test_a_trial_folder_has_one_writer_the_second_waits_and_then_sees_the_first_ones_results(tmp_path):
    """A `scalelab run` whose claim lapsed may still be training a trial that another run took
    over. The taker's worker waits on the folder's lock instead of writing beside it, and once
    the first process ends it reads that process's journal (replay, no second training)."""
    import subprocess
    import sys
    import textwrap

    from orchestrator.trial_folder import trial_lock

    trial_dir = tmp_path / "abc"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from orchestrator.trial_folder import trial_lock
        d = Path({str(trial_dir)!r})
        with trial_lock([d]):
            print("locked", flush=True)
            time.sleep(2.5)
            with open(d / "reports.jsonl", "a") as fh:
                fh.write(json.dumps({{"hash": "abc", "metrics": {{"step": 20, "final": True}}}}) + "\\n")
        """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        notes: list[str] = []
        with trial_lock([tmp_path / "other", trial_dir], note=notes.append):
            entries = Journal(trial_dir / "reports.jsonl").read()
            assert entries and entries[-1]["metrics"]["final"], "acquired while the other writer still held it"
        assert len(notes) == 1 and "another process is writing its folder" in notes[0]
    finally:
        holder.kill()
        holder.wait()
    with trial_lock([trial_dir], note=notes.append):  # free again: no wait, no note
        pass
    assert len(notes) == 1
