"""Killing `scalelab run` (SIGKILL to its whole process group) mid-sweep, then running it again:
every trial ends finished, once, and the interrupted one continues from its checkpoint without
duplicating metric steps."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import start_scalelab, sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # `scalelab run` processes, killed and rerun

STEPS = list(range(10, 90, 10))


def trial_states(trials_dir: Path) -> tuple[list[str], list[str]]:
    """(hashes whose final report is journaled, hashes with a checkpoint but no final report)."""
    done, partial = [], []
    for journal in trials_dir.glob("*/reports.jsonl"):
        lines = journal.read_text().splitlines()
        try:
            final = bool(lines) and json.loads(lines[-1])["metrics"].get("final")
        except json.JSONDecodeError:  # being written right now
            final = False
        if final:
            done.append(journal.parent.name)
        elif any((journal.parent / "checkpoints").glob("step_*/state.pt")) and lines:
            partial.append(journal.parent.name)
    return done, partial


def kill_once_one_done_one_partial(proc, trials_dir, timeout: float = 300):
    """SIGKILL the driver's whole process group as soon as one trial has finished and another
    has a checkpoint but no final report; return the (finished, half-done) trial hashes."""
    done, partial = [], []
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            done, partial = trial_states(trials_dir)
            if done and partial:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return done, partial


def test_killed_driver_resumes_without_duplicates(tmp_path, tiny_sweep):
    tiny_sweep("resume", base={"steps": 80}, grid={"lr": [1e-3, 2e-3, 3e-3]}, concurrency=1)
    trials_dir = tmp_path / ".scalelab" / "trials" / "resume"
    log1 = tmp_path / "first.log"
    proc = start_scalelab(["run", "resume.yaml"], tmp_path, log=log1)
    done, partial = kill_once_one_done_one_partial(proc, trials_dir)
    assert done and partial, f"never saw a finished and a half-done trial:\n{log1.read_text()[-3000:]}"
    interrupted = partial[0]

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    _, _, before = sweep_runs(uri, "resume")
    ids_before = {r.data.tags["scalelab.trial_hash"]: r.info.run_id for r in before
                  if "scalelab.training_started" in r.data.tags}
    queued_before = {r.data.tags["scalelab.trial_hash"]: r.info.run_id for r in before
                     if "scalelab.training_started" not in r.data.tags}

    second = start_scalelab(["run", "resume.yaml"], tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output, _ = second.communicate(timeout=400)
    assert second.returncode == 0, output[-3000:]
    assert "resumed" in output and "from step" in output, output[-3000:]

    client, _, after = sweep_runs(uri, "resume")
    by_hash = {r.data.tags["scalelab.trial_hash"]: r for r in after}
    assert len(after) == len(by_hash) == 3                      # no duplicated runs
    assert all(r.data.tags["scalelab.outcome"] == "finished" for r in after)
    assert len(ids_before) >= 2                                 # the finished and the half-done trial
    for trial_hash, run_id in ids_before.items():               # runs started before the kill are reused
        assert by_hash[trial_hash].info.run_id == run_id
    for trial_hash, run_id in queued_before.items():            # a claim's placeholder: replaced at training start
        assert by_hash[trial_hash].data.tags["scalelab.replaces"] == run_id
    for run in after:
        for key in ("train_loss", "val_loss", "tokens"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == STEPS, (run.data.tags["scalelab.label"], key, steps)
    # the interrupted trial continued from a checkpoint rather than from step 0
    resumed_line = next(line for line in output.splitlines() if "resumed" in line)
    assert int(resumed_line.rsplit("from step", 1)[1].split()[0]) >= 10
    assert by_hash[interrupted].data.metrics["final_val_loss"] > 0


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_killed_search_requeues_the_interrupted_sample(store, tmp_path, tiny_sweep, request):
    """`postgres`: the lab's database, an MLflow server over PostgreSQL and the study in it."""
    import optuna

    if store == "postgres":
        uri, storage = (request.getfixturevalue("postgres_mlflow_server"),
                        request.getfixturevalue("postgres").new_database("optuna"))
        where, flags = {"storage": storage}, ["--tracking-uri", uri]
    else:   # the defaults: MLflow in ./mlflow.db, the study next to it
        uri, storage = "sqlite:///" + str(tmp_path / "mlflow.db"), "sqlite:///" + str(tmp_path / "optuna.db")
        where, flags = {}, []
    tiny_sweep("resume-search", base={"steps": 80}, concurrency=1, search={
        "metric": "final_val_loss", "num_samples": 3, "sampler_seed": 1,
        "space": {"lr": {"log_uniform": [1e-3, 1e-2]}}, **where})
    trials_dir = tmp_path / ".scalelab" / "trials" / "resume-search"
    proc = start_scalelab(["run", "resume-search.yaml", *flags], tmp_path, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    done, partial = kill_once_one_done_one_partial(proc, trials_dir)
    assert done and partial
    study = optuna.load_study(study_name="resume-search", storage=storage)
    interrupted = [t.params for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(interrupted) == 1

    second = start_scalelab(["run", "resume-search.yaml", *flags], tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output, _ = second.communicate(timeout=400)
    assert second.returncode == 0, output[-3000:]
    assert "1 interrupted sample(s) re-queued" in output and "resumed" in output, output[-3000:]
    if store == "postgres":
        assert request.getfixturevalue("postgres").password not in output, "the PostgreSQL password was printed"

    client, _, runs = sweep_runs(uri, "resume-search")
    seen = [(r.data.params.get("lr"), r.data.tags.get("scalelab.outcome")) for r in runs]
    assert len(runs) == len({r.data.tags["scalelab.trial_hash"] for r in runs}) == 3, (seen, interrupted, output[-3000:])
    assert all(r.data.tags["scalelab.outcome"] == "finished" for r in runs)
    # the re-queued point was trained to the end in the run that was interrupted
    lr = interrupted[0]["lr"]
    resumed = [r for r in runs if float(r.data.params["lr"]) == pytest.approx(lr)]
    assert len(resumed) == 1
    steps = [m.step for m in client.get_metric_history(resumed[0].info.run_id, "train_loss")]
    assert sorted(steps) == STEPS
    study = optuna.load_study(study_name="resume-search", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
