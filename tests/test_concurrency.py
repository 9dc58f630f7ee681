"""Two `scalelab run` of one sweep at once (issue 9): every trial is claimed in the tracking store
before it runs, so no interleaving makes two child runs of one hash or two writers of one trial's
directory. Unit level here (two trackers in one process); real processes at the end (slow)."""
from __future__ import annotations

import threading

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from orchestrator.layout import TAG_HASH, TAG_KIND, TAG_OWNER
from orchestrator.spec import load_sweep
from orchestrator.tracking import SweepTracker


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(TAG_KIND) == "trial"]


def test_claims_split_the_trials_and_expire_with_their_owner(tiny_sweep, tracking_uri, monkeypatch):
    spec = load_sweep(tiny_sweep("claims", grid={"lr": [0.01, 0.02, 0.03]}))
    trials = spec.trials()
    a = SweepTracker(tracking_uri, spec.experiment, spec.name, "grid")
    mine, held, done = a.claim(trials[:2])
    assert [t.hash for t in mine] == [t.hash for t in trials[:2]] and not held and not done

    b = SweepTracker(tracking_uri, spec.experiment, spec.name, "grid")
    assert b.parent_id == a.parent_id
    mine, held, done = b.claim(trials)            # A holds two: B gets only the third
    assert [t.hash for t in mine] == [trials[2].hash]
    assert set(held) == {t.hash for t in trials[:2]} and set(held.values()) == {a.owner}

    a.heartbeat([trials[0].hash], release=True)   # A lets one go (e.g. it was interrupted)
    mine, held, _ = b.claim(trials[:2])
    assert [t.hash for t in mine] == [trials[0].hash] and set(held) == {trials[1].hash}

    monkeypatch.setenv(tracking.LEASE_ENV, "0.5")  # A died: its claim lapses after the lease
    import time
    time.sleep(0.6)
    mine, held, _ = b.claim(trials[1:2])
    assert [t.hash for t in mine] == [trials[1].hash] and not held

    runs = trial_runs(tracking_uri, spec.experiment)
    assert sorted(r.data.tags[TAG_HASH] for r in runs) == sorted(t.hash for t in trials)  # one run per hash
    assert {r.data.tags[TAG_OWNER] for r in runs} == {b.owner}


@pytest.mark.parametrize("settle_only", [False, True], ids=["sqlite-lock", "settle-rule"])
def test_simultaneous_claims_leave_one_run_per_hash(tiny_sweep, tracking_uri, monkeypatch, settle_only):
    """Many trackers claiming the same trials at the same instant: the oldest run of each hash
    wins, the others delete theirs, and each trial has exactly one holder. `settle-rule` drops
    the SQLite lock to check the rule an MLflow server relies on."""
    if settle_only:
        from contextlib import nullcontext
        monkeypatch.setattr(tracking, "sqlite_lock", lambda uri: nullcontext())
        monkeypatch.setattr(tracking, "sqlite_path", lambda uri: None)
    spec = load_sweep(tiny_sweep("race", grid={"lr": [0.01, 0.02, 0.03, 0.04]}))
    trials = spec.trials()
    SweepTracker(tracking_uri, spec.experiment, spec.name, "grid")  # the schema, once
    results, errors = [], []
    barrier = threading.Barrier(3)

    def claim():
        try:
            tracker = SweepTracker(tracking_uri, spec.experiment, spec.name, "grid")
            barrier.wait()
            results.append(tracker.claim(trials))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    holders = {}
    for mine, held, _ in results:
        for t in mine:
            assert t.hash not in holders, "two invocations hold one trial"
            holders[t.hash] = True
    assert set(holders) == {t.hash for t in trials}
    runs = trial_runs(tracking_uri, spec.experiment)
    assert sorted(r.data.tags[TAG_HASH] for r in runs) == sorted(t.hash for t in trials)


# --- real processes ----------------------------------------------------------------------------

def scalelab_run(sweep, uri: str, storage, log) -> "subprocess.Popen":
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("SCALELAB_FAULT_INJECT", None)
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(sweep), "--tracking-uri", uri,
                             "--storage", str(storage), "--num-cpus", "1"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=str(sweep.parent), env=env,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("store,stagger", [("sqlite", 0.0), ("server", 3.0)])
def test_two_runs_of_one_sweep_at_once_make_one_run_per_trial(store, stagger, tmp_path, tiny_sweep, request):
    """Two `scalelab run` of one sweep against one store, started together (new SQLite file: the
    schema race) or a few seconds apart (server): both exit 0, each trial has one child run,
    finished once, and one writer of its journal."""
    import json
    import time

    uri = (request.getfixturevalue("mlflow_server") if store == "server"
           else "sqlite:///" + str(tmp_path / "new.db"))
    sweep = tiny_sweep("twice", grid={"lr": [0.01, 0.02, 0.03]})
    storage = tmp_path / "store"
    first = scalelab_run(sweep, uri, storage, tmp_path / "a.log")
    time.sleep(stagger)
    second = scalelab_run(sweep, uri, storage, tmp_path / "b.log")
    try:
        codes = [first.wait(timeout=240), second.wait(timeout=240)]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                import os
                import signal
                os.killpg(proc.pid, signal.SIGKILL)
    logs = [(tmp_path / n).read_text() for n in ("a.log", "b.log")]
    assert codes == [0, 0], logs
    assert not any("Traceback" in text for text in logs), logs
    runs = trial_runs(uri, "twice")
    hashes = [r.data.tags[TAG_HASH] for r in runs]
    assert len(hashes) == len(set(hashes)) == 3, logs                    # one child run per hash
    assert {r.data.tags.get("scalelab.outcome") for r in runs} == {"finished"}, logs
    for trial_hash in hashes:                                           # one writer per trial
        entries = [json.loads(line) for line in
                   (storage / "trials" / "twice" / trial_hash / "reports.jsonl").read_text().splitlines()]
        steps = [e["metrics"]["step"] for e in entries if not e["metrics"].get("final")]
        assert steps == sorted(set(steps)) and sum(bool(e["metrics"].get("final")) for e in entries) == 1, steps
    assert any("held by another scalelab run" in text for text in logs) or \
        any("3 already done, 0 to run" in text for text in logs), logs


def test_a_claim_of_a_killed_process_on_this_machine_needs_no_lease():
    import socket
    import subprocess
    import sys

    from orchestrator.tracking import owner_is_dead

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    assert owner_is_dead(f"{host}:{proc.pid}:abcd1234")
    assert not owner_is_dead(f"{host}:{__import__('os').getpid()}:abcd1234")   # alive
    assert not owner_is_dead(f"elsewhere:{proc.pid}:abcd1234")                 # another machine: lease only
