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
