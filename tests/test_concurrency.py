"""Two `scalelab run` of one sweep at once (issue 9): every trial is claimed in the tracking store
before it runs, so no interleaving makes two child runs of one hash or two writers of one trial's
directory. Unit level here (two trackers in one process); real processes at the end (slow).
`postgres` cases run against the lab's database: an MLflow server over PostgreSQL, and the
study on the same PostgreSQL (tests/postgres_server.py); its password is never printed."""
from __future__ import annotations

import threading

import pytest
from mlflow.tracking import MlflowClient

from helpers import complete_trials, journal, start_scalelab, study_storage, sweep_runs, write_search_sweep
from orchestrator import claims as tracking  # the claim protocol: LEASE_ENV, sqlite_lock, sqlite_path
from orchestrator.layout import TAG_HASH, TAG_OWNER
from orchestrator.run_writes import SweepTracker
from orchestrator.spec import load_sweep


def trial_runs(uri: str, experiment: str) -> list:
    return sweep_runs(uri, experiment)[2]


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

    a.heartbeat([a.children[trials[0].hash].run_id], release=True)   # A lets one go (e.g. it was interrupted)
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


def search_sweep(folder, storage: str | None = None):
    """The search sweep of tests/test_run_search.py (3 samples of lr, 2 at once), its study at
    `storage` (default: optuna.db in `folder`)."""
    return write_search_sweep(folder, "search-twice", 3, storage=storage)


def stores(request, store: str, tmp_path) -> tuple[str, str]:
    """(tracking URI, search sweeps' study storage) of `store`: `sqlite` a new SQLite file (the
    study beside it), `server` an MLflow server over SQLite, `postgres` an MLflow server over
    PostgreSQL and the study in a database of that PostgreSQL."""
    if store == "postgres":
        study = request.getfixturevalue("postgres").new_database("optuna")
        return request.getfixturevalue("postgres_mlflow_server"), study
    uri = (request.getfixturevalue("mlflow_server") if store == "server"
           else "sqlite:///" + str(tmp_path / "new.db"))
    return uri, study_storage(tmp_path)


def assert_no_password(request, store: str, *texts: str) -> None:
    """The PostgreSQL password, which the study URI carries, appears in none of `texts`."""
    if store == "postgres":
        password = request.getfixturevalue("postgres").password
        leaks = [line.replace(password, "<PASSWORD>") for text in texts for line in text.splitlines()
                 if password in line]
        assert not leaks, f"the PostgreSQL password was printed: {leaks[:5]}"


def test_a_search_sweep_is_claimed_as_a_whole(tracking_uri, tmp_path, monkeypatch):
    """A search sweep's claim is on its parent run: one holder, released at the end, lapsed
    after the lease when its owner stops renewing it."""
    spec = load_sweep(search_sweep(tmp_path))
    a = SweepTracker(tracking_uri, spec.experiment, spec.name, "search")
    b = SweepTracker(tracking_uri, spec.experiment, spec.name, "search")
    assert a.claim_sweep() is None and a.claimed == [a.parent_id]
    assert b.claim_sweep() == a.owner and not b.sweep_claimed   # A holds it: B runs nothing
    assert a.heartbeat() == []                                    # A renews it
    a.heartbeat(release=True)                                     # A ends
    assert b.claim_sweep() is None

    monkeypatch.setenv(tracking.LEASE_ENV, "0.5")                 # B dies: its claim lapses
    import time
    time.sleep(0.6)
    c = SweepTracker(tracking_uri, spec.experiment, spec.name, "search")
    assert c.claim_sweep() is None
    assert b.heartbeat() == [b.parent_id]                         # B comes back: taken over


@pytest.mark.parametrize("settle_only", [False, True], ids=["sqlite-lock", "settle-rule"])
def test_simultaneous_search_claims_have_one_winner(tracking_uri, tmp_path, monkeypatch, settle_only):
    if settle_only:
        from contextlib import nullcontext
        monkeypatch.setattr(tracking, "sqlite_lock", lambda uri: nullcontext())
        monkeypatch.setattr(tracking, "sqlite_path", lambda uri: None)
    spec = load_sweep(search_sweep(tmp_path))
    trackers = [SweepTracker(tracking_uri, spec.experiment, spec.name, "search") for _ in range(3)]
    results, barrier = {}, threading.Barrier(3)

    def claim(tracker):
        barrier.wait()
        results[tracker.owner] = tracker.claim_sweep()

    threads = [threading.Thread(target=claim, args=(t,)) for t in trackers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [owner for owner, holder in results.items() if holder is None]
    assert len(winners) == 1, results
    if settle_only:
        # A loser names the claim it read after its settle wait. Without the lock, on a loaded
        # machine that can be a rival whose claim a later write then overrode (seen once in ~10
        # runs: A named B, B named C, C won). The rule promises one winner (while rival writes
        # land within CLAIM_SETTLE_S) and no loser naming itself, not the final winner's name.
        owners = {t.owner for t in trackers}
        assert all(holder in owners - {owner} for owner, holder in results.items() if holder is not None), results
    else:
        assert all(holder == winners[0] for holder in results.values() if holder is not None), results


# --- lapsed claims: the first owner's queued writes after MLflow returns --------------------------

class FakeTuneTrial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.error_file = trial_id, config, None


def report(step: int, loss: float, final: bool = False) -> dict:
    from orchestrator.trial import REPORT_KEY

    metrics = {"step": step, "val_loss": loss, **({"final": True, "status": "finished"} if final else {})}
    return {REPORT_KEY: {"metrics": metrics, "ts": 1_700_000_000_000 + step}}


def send_trial(callback, tune_trial, loss: float) -> None:
    """What Tune tells the callback of one trial that trains to the end (writes sent at once)."""
    callback.on_trial_start(0, [], tune_trial)
    callback.on_trial_result(0, [], tune_trial, report(10, loss))
    callback.on_trial_result(0, [], tune_trial, report(20, loss, final=True))


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", ["grid", "search"])
def test_writes_after_a_lapsed_claim_was_taken_over_are_dropped(mode, store, tiny_sweep, tmp_path, request,
                                                                 monkeypatch, capsys):
    """A holds the trial (grid) or the sweep (search); its heartbeats do not reach MLflow for a
    whole lease and B takes the claim over and runs the trial. When A's queued reports are sent
    later, none of them reaches MLflow: no second run of the hash, B's reports, outcome and claim
    stay, A says in one line that the trial was taken over, and A's Tune stops that trial (and,
    for a search sweep, the whole sweep)."""
    from orchestrator.outbox import Outbox
    from orchestrator.tune_callback import OutageStopper
    from orchestrator.tune_callback import MlflowTrackingCallback

    tracking_uri, study = (request.getfixturevalue("tracking_uri"), None) if store == "sqlite" \
        else stores(request, store, tmp_path)
    spec = load_sweep(search_sweep(tmp_path, study) if mode == "search"
                      else tiny_sweep("lapse", grid={"lr": [0.01]}))
    trial = spec.resolve({"lr": 0.004}) if mode == "search" else spec.trials()[0]
    a = SweepTracker(tracking_uri, spec.experiment, spec.name, mode)
    b = SweepTracker(tracking_uri, spec.experiment, spec.name, mode)

    def claim(tracker):
        return tracker.claim_sweep() is None if mode == "search" else bool(tracker.claim([trial])[0])

    assert claim(a)
    monkeypatch.setenv(tracking.LEASE_ENV, "0.5")   # A is cut off from MLflow for a whole lease
    import time
    time.sleep(0.6)
    assert claim(b)
    send_trial(MlflowTrackingCallback(b, lambda config: trial, lambda t: None), FakeTuneTrial("b1", {}), loss=2.0)

    callback = MlflowTrackingCallback(a, lambda config: trial, lambda t: None)
    send_trial(callback, FakeTuneTrial("a1", {}), loss=9.0)
    stopper = OutageStopper(Outbox(), callback)        # A's trial stops: B soon its only writer
    assert stopper("a1", {}) and stopper.stop_all() == (mode == "search")

    runs = [r for r in trial_runs(tracking_uri, spec.experiment) if r.data.tags[TAG_HASH] == trial.hash]
    assert len(runs) == 1                                              # no second run of the hash
    run = MlflowClient(tracking_uri=tracking_uri).get_run(runs[0].info.run_id)
    assert run.data.tags["scalelab.outcome"] == "finished" and run.info.status == "FINISHED"
    assert run.data.metrics["val_loss"] == 2.0                         # B's reports, not A's
    claim_run = b.parent_id if mode == "search" else run.info.run_id
    assert MlflowClient(tracking_uri=tracking_uri).get_run(claim_run).data.tags[TAG_OWNER] == b.owner
    out, err = capsys.readouterr()
    assert err.count("taken over by another scalelab run") == 1 and b.owner in err, err
    assert "journal" in err
    assert_no_password(request, store, out, err)


def test_a_claim_that_lapsed_but_was_not_taken_is_kept(tiny_sweep, tracking_uri, monkeypatch, capsys):
    """A's heartbeats missed a whole lease but nobody claimed the trial meanwhile: A takes its
    claim again (full rule) and its queued writes go through."""
    from orchestrator.outbox import Outbox
    from orchestrator.tune_callback import OutageStopper
    from orchestrator.tune_callback import MlflowTrackingCallback

    spec = load_sweep(tiny_sweep("lapse-kept", grid={"lr": [0.01]}))
    trial = spec.trials()[0]
    a = SweepTracker(tracking_uri, spec.experiment, spec.name, "grid")
    assert a.claim([trial])[0]
    monkeypatch.setenv(tracking.LEASE_ENV, "0.5")
    import time
    time.sleep(0.6)
    callback = MlflowTrackingCallback(a, lambda config: trial, lambda t: None)
    send_trial(callback, FakeTuneTrial("a1", {}), loss=3.0)
    stopper = OutageStopper(Outbox(), callback)
    assert not stopper("a1", {}) and not stopper.stop_all()
    (run,) = trial_runs(tracking_uri, spec.experiment)
    assert run.data.tags["scalelab.outcome"] == "finished" and run.data.metrics["val_loss"] == 3.0
    assert run.data.tags[TAG_OWNER] == a.owner and "taken over" not in capsys.readouterr().err


# --- real processes ----------------------------------------------------------------------------

def scalelab_run(sweep, uri: str, storage, log):
    return start_scalelab(["run", str(sweep), "--tracking-uri", uri, "--storage", str(storage), "--num-cpus", "1"],
                          sweep.parent, log)


def run_twice(sweep, uri: str, storage, stagger: float, logs_dir) -> tuple[list[int], list[str]]:
    """Two `scalelab run` of `sweep`, the second `stagger` seconds after the first: their exit
    codes and logs."""
    import os
    import signal
    import time

    first = scalelab_run(sweep, uri, storage, logs_dir / "a.log")
    time.sleep(stagger)
    second = scalelab_run(sweep, uri, storage, logs_dir / "b.log")
    try:
        codes = [first.wait(timeout=240), second.wait(timeout=240)]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return codes, [(logs_dir / n).read_text() for n in ("a.log", "b.log")]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("store,stagger", [("sqlite", 0.0), ("server", 3.0), ("postgres", 3.0)])
def test_two_runs_of_one_sweep_at_once_make_one_run_per_trial(store, stagger, tmp_path, tiny_sweep, request):
    """Two `scalelab run` of one sweep against one store, started together (new SQLite file: the
    schema race) or a few seconds apart (a server, over SQLite or PostgreSQL): both exit 0, each
    trial has one child run, finished once, and one writer of its journal."""
    uri, _ = stores(request, store, tmp_path)
    sweep = tiny_sweep("twice", grid={"lr": [0.01, 0.02, 0.03]})
    storage = tmp_path / "store"
    codes, logs = run_twice(sweep, uri, storage, stagger, tmp_path)
    assert codes == [0, 0], logs
    assert not any("Traceback" in text for text in logs), logs
    runs = trial_runs(uri, "twice")
    hashes = [r.data.tags[TAG_HASH] for r in runs]
    assert len(hashes) == len(set(hashes)) == 3, logs                    # one child run per hash
    assert {r.data.tags.get("scalelab.outcome") for r in runs} == {"finished"}, logs
    for trial_hash in hashes:                                           # one writer per trial
        entries = journal(storage, "twice", trial_hash)
        steps = [e["metrics"]["step"] for e in entries if not e["metrics"].get("final")]
        assert steps == sorted(set(steps)) and sum(bool(e["metrics"].get("final")) for e in entries) == 1, steps
    assert any("held by another scalelab run" in text for text in logs) or \
        any("3 already done, 0 to run" in text for text in logs), logs
    # the parent is closed once no run is at work on the sweep, with the whole sweep's cost last
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["tuning_trials"] == 3.0, logs
    assert_no_password(request, store, *logs)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("store,stagger", [("sqlite", 0.0), ("server", 3.0), ("postgres", 3.0)])
def test_two_runs_of_one_search_sweep_at_once_draw_its_samples_once(store, stagger, tmp_path, request):
    """Two `scalelab run` of one search sweep against one store (its study in SQLite, or in
    PostgreSQL with `postgres`): one holds the sweep and runs its 3 samples, the other runs none
    and names the holder; both exit 0; one child run per hash."""
    uri, study = stores(request, store, tmp_path)
    codes, logs = run_twice(search_sweep(tmp_path, study), uri, tmp_path / "store", stagger, tmp_path)
    assert codes == [0, 0], logs
    assert not any("Traceback" in text for text in logs), logs
    runs = trial_runs(uri, "search-twice")
    hashes = [r.data.tags[TAG_HASH] for r in runs]
    assert len(hashes) == len(set(hashes)) == 3, logs                   # 3 samples, not 6; one run each
    assert {r.data.tags.get("scalelab.outcome") for r in runs} == {"finished"}, logs
    assert len(complete_trials(study)) == 3, logs
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    holder = parent.data.tags[TAG_OWNER]                                # the winner's claim, released
    assert parent.data.tags["scalelab.heartbeat"] == "0"
    # only the holder closes the parent and records the tuning cost: no partial count from the other
    assert parent.info.status == "FINISHED"
    assert [h.value for h in client.get_metric_history(parent.info.run_id, "tuning_trials")] == [3.0], logs
    losers = [text for text in logs if "search sweep held by another scalelab run" in text]
    assert len(losers) == 1 and f"held by another scalelab run ({holder})" in losers[0], logs
    assert_no_password(request, store, *logs)


def test_a_claim_of_a_killed_process_on_this_machine_needs_no_lease():
    import socket
    import subprocess
    import sys

    from orchestrator.claims import owner_is_dead

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    assert owner_is_dead(f"{host}:{proc.pid}:abcd1234")
    assert not owner_is_dead(f"{host}:{__import__('os').getpid()}:abcd1234")   # alive
    assert not owner_is_dead(f"127.0.0.2:{proc.pid}:abcd1234")                 # another host: lease only
