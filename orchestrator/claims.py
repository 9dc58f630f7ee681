"""Claims (docs/CONTRACTS.md, "MLflow layout"): which `scalelab run` holds a trial, or a whole
search sweep, so that concurrent invocations never run one trial twice.

Before a grid sweep runs, `Claims.claim` records in each pending trial's run which `scalelab
run` holds it (owner + heartbeat tags); a search sweep is claimed as a whole, on its parent run
(`Claims.claim_sweep`). The `Heartbeat` renews the claims while the trials run and releases
them at the end; a claim whose owner died expires after the lease. Before each write of a
trial's results the Tune callback asks `taken_over`: a claim that lapsed during an MLflow
outage and was taken over gets no more writes from here.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from typing import Iterable

from mlflow.entities import RunTag

from .layout import DONE_OUTCOMES, TAG_HEARTBEAT, TAG_OWNER, sqlite_lock, sqlite_path

# Claims (docs/CONTRACTS.md, "MLflow layout"): a trial is held by the `scalelab run` named in its run's
# owner tag while the heartbeat tag is younger than the lease; the owner renews it meanwhile.
LEASE_ENV = "SCALELAB_LEASE_S"
DEFAULT_LEASE_S = 180.0
# After creating or taking over runs, wait this long before re-reading them: longer than a run's
# start time (stamped by the client) can precede its commit, so every older rival is visible.
CLAIM_SETTLE_S = 2.0
# MLflow's RunStatus of a claimed trial's run until its training starts: the run list does not
# show a queued trial as RUNNING. (A run is created RUNNING; the claim moves it here.)
SCHEDULED = "SCHEDULED"

# (owner, run id) -> epoch ms of our last claim write on that run known to hold, and -> the owner
# that took the run over from us. Module-level: Tune works on copies of the tracker, and the
# heartbeat thread's tracker and the callback's copy must agree.
_RENEWED: dict[tuple[str, str], int] = {}
_TAKEN: dict[tuple[str, str], str] = {}
# (owner, run id a claim made) -> the run that replaced it when the trial's training started
# (run_writes.SweepTracker.start_child): the heartbeat renews and releases the claim there.
_MOVED: dict[tuple[str, str], str] = {}


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """An owner on this machine whose process is gone (killed): its claim needs no lease to
    lapse. Owners on other machines only expire."""
    parts = owner.split(":")
    if len(parts) < 3 or ":".join(parts[:-2]) != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def held_by_other(owner: str, heartbeat_ms: int, me: str, now_ms: int, lease_s: float) -> bool:
    """A claim (owner + heartbeat tags of a run) that a live invocation other than `me` holds."""
    return bool(owner) and owner != me and now_ms - heartbeat_ms < lease_s * 1000 and not owner_is_dead(owner)


def tags_held_by_other(tags: dict, me: str, now_ms: int, lease_s: float) -> bool:
    """held_by_other for the claim in a run's tags (TAG_OWNER, TAG_HEARTBEAT)."""
    return held_by_other(tags.get(TAG_OWNER, ""), int(tags.get(TAG_HEARTBEAT) or 0), me, now_ms, lease_s)


class Claims:
    """The claim protocol on a sweep's runs, mixed into run_writes.SweepTracker, whose MLflow
    client, parent run, children and run identity tags it uses."""

    def _tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

    def _claim_tags(self, run_id: str, heartbeat_ms: int) -> None:
        self.client.log_batch(run_id, tags=[RunTag(TAG_OWNER, self.owner), RunTag(TAG_HEARTBEAT, str(heartbeat_ms))],
                              synchronous=True)

    def claim(self, trials: list) -> tuple[list, dict[str, str], list]:
        """Claim the trials for this invocation before any runs: (claimed, {hash: owner} of those
        another live invocation holds, those that got a result meanwhile).

        A trial without a run gets one, created with its identity and claim tags in one call; a run
        whose claim is ours, released or older than the lease is taken over by writing the claim
        tags. Then, CLAIM_SETTLE_S later (every rival write that could win is stored by then), all
        runs of the sweep are re-read: the oldest run of each hash wins (a loser deletes its own)
        and the last claim written on it holds the trial. On SQLite the whole claim runs under
        the database's file lock instead (no rival can interleave; no wait).
        """
        with sqlite_lock(self.tracking_uri):
            return self._claim(trials, settle=0.0 if sqlite_path(self.tracking_uri) else CLAIM_SETTLE_S)

    def _claim(self, trials: list, settle: float) -> tuple[list, dict[str, str], list]:
        now = int(time.time() * 1000)
        lease = lease_seconds()
        self.children = self._load_children(drop_unfinished_swaps=True)
        created, wrote = set(), False
        for trial in trials:
            child = self.children.get(trial.hash)
            if child is None:
                run = self.client.create_run(self.experiment_id, run_name=trial.label, tags={
                    **self._identity_tags(trial), TAG_OWNER: self.owner, TAG_HEARTBEAT: str(now)})
                created.add(run.info.run_id)
                wrote = True
            elif child.outcome not in DONE_OUTCOMES and not child.held_by_other(self.owner, now, lease):
                wrote = wrote or child.owner != self.owner
                self._claim_tags(child.run_id, now)
        if wrote and settle:
            time.sleep(settle)
        self.children = self._load_children()
        winners = {c.run_id for c in self.children.values()}
        for run_id in created - winners:  # lost the race for that hash to an older run
            self.client.delete_run(run_id)
        mine, held, done = [], {}, []
        for trial in trials:
            child = self.children[trial.hash]
            if child.outcome in DONE_OUTCOMES:
                done.append(trial)
            elif child.owner == self.owner:
                mine.append(trial)
                self._held_since(child.run_id, now)
                if child.status != SCHEDULED:  # queued until its training starts (SweepTracker.start_child)
                    self.client.update_run(child.run_id, status=SCHEDULED)
                    child.status = SCHEDULED
            else:
                held[trial.hash] = child.owner
        return mine, held, done

    def claim_sweep(self) -> str | None:
        """Claim the whole sweep on its parent run (search sweeps: one stream of samples from one
        study, which one invocation draws): None when this invocation holds it now, else the
        owner of the live claim that another invocation holds. Same tags, lease and race rule as
        a trial's claim: under the SQLite lock, or write, wait CLAIM_SETTLE_S and re-read (the
        last claim written holds)."""
        with sqlite_lock(self.tracking_uri):
            tags = self._tags(self.parent_id)
            if tags_held_by_other(tags, self.owner, int(time.time() * 1000), lease_seconds()):
                return tags.get(TAG_OWNER, "")
            if not self._take(self.parent_id):
                return self._tags(self.parent_id).get(TAG_OWNER, "")
        self.sweep_claimed = True
        return None

    def _current(self, run_id: str) -> str:
        """The run that holds the claim first written on `run_id` (moved at training start)."""
        return _MOVED.get((self.owner, run_id), run_id)

    def move_claim(self, old_run_id: str, new_run_id: str) -> None:
        """Our claim on `old_run_id` now lives on `new_run_id` (same owner and heartbeat tags):
        renewals, release and the take-over checks follow it, in every copy of the tracker."""
        _MOVED[(self.owner, old_run_id)] = new_run_id
        renewed = _RENEWED.pop((self.owner, old_run_id), None)
        if renewed is not None:
            _RENEWED[(self.owner, new_run_id)] = renewed
        self.claimed = [new_run_id if r == old_run_id else r for r in self.claimed]

    def _held_since(self, run_id: str, now_ms: int) -> None:
        _RENEWED[(self.owner, run_id)] = now_ms
        if run_id not in self.claimed:
            self.claimed.append(run_id)

    def _take(self, run_id: str, settle: bool = True) -> bool:
        """Write our claim on `run_id`; with `settle`, wait until rival writes are stored (server)
        and re-read: True when the claim is ours. The caller holds the SQLite lock."""
        now = int(time.time() * 1000)
        self._claim_tags(run_id, now)
        if settle:
            if sqlite_path(self.tracking_uri) is None:
                time.sleep(CLAIM_SETTLE_S)
            if self._tags(run_id).get(TAG_OWNER) != self.owner:
                return False
        self._held_since(run_id, now)
        return True

    def _renew(self, run_id: str) -> str | None:
        """Renew our claim on `run_id`: None while it is ours, else the owner who took it over.
        A claim renewed less than half a lease ago cannot have been taken (nobody takes one
        before a whole lease without renewal): its heartbeat is just written. An older one may
        have lapsed (MLflow unreachable meanwhile), and a rival may be writing its own claim
        right now: it is taken again by the full rule (_take with settle), unless another owner
        is already on it; once taken over, a claim stays lost."""
        key = (self.owner, run_id)
        if key in _TAKEN:
            return _TAKEN[key]
        with sqlite_lock(self.tracking_uri):
            owner = self._tags(run_id).get(TAG_OWNER, "")
            fresh = time.time() * 1000 - _RENEWED.get(key, 0) < lease_seconds() * 500
            if owner == self.owner and self._take(run_id, settle=not fresh):
                return None
            if owner == self.owner:
                owner = self._tags(run_id).get(TAG_OWNER, "")
        _TAKEN[key] = owner
        return owner

    def claim_run(self, trial_hash: str | None) -> str | None:
        """The run whose claim covers `trial_hash` in this invocation: the parent when the sweep is
        claimed as a whole, else the trial's run if this invocation claimed it; None if none."""
        if self.sweep_claimed:
            return self.parent_id
        child = self.children.get(trial_hash) if trial_hash else None
        return child.run_id if child is not None and child.run_id in self.claimed else None

    def lost(self, trial_hash: str | None) -> bool:
        """The claim covering `trial_hash` is known to be taken over (no call to MLflow)."""
        run_id = self.claim_run(trial_hash)
        return run_id is not None and (self.owner, run_id) in _TAKEN

    def sweep_lost(self) -> bool:
        return self.sweep_claimed and (self.owner, self.parent_id) in _TAKEN

    def taken_over(self, trial_hash: str | None) -> str | None:
        """Before writing a trial's results: None while this invocation still holds the claim
        covering it (or it has none), else the owner of the `scalelab run` that took it over.
        Costs no call to MLflow while the claim was renewed within half a lease."""
        run_id = self.claim_run(trial_hash)
        if run_id is None:
            return None
        key = (self.owner, run_id)
        if key not in _TAKEN and time.time() * 1000 - _RENEWED.get(key, 0) < lease_seconds() * 500:
            return None
        return self._renew(run_id)

    def heartbeat(self, run_ids: Iterable[str] | None = None, release: bool = False) -> list[str]:
        """Renew (or release: heartbeat 0) this invocation's claims on the given runs (default:
        all it claimed); returns the run ids whose claim another invocation took over meanwhile
        (ours had lapsed)."""
        lost = []
        for run_id in list(self.claimed if run_ids is None else run_ids):
            run_id = self._current(run_id)
            if release:
                if self._tags(run_id).get(TAG_OWNER) == self.owner:
                    self.client.log_batch(run_id, tags=[RunTag(TAG_HEARTBEAT, "0")], synchronous=True)
                _RENEWED.pop((self.owner, run_id), None)
            elif self._renew(run_id) is not None:
                lost.append(run_id)
        return lost

    def others_active(self) -> bool:
        """Another live `scalelab run` still holds a claim in this sweep (a trial's, or a search
        sweep's on the parent): it closes the parent when it ends, not this invocation."""
        now, lease = int(time.time() * 1000), lease_seconds()
        self.refresh()
        if any(c.outcome not in DONE_OUTCOMES and c.held_by_other(self.owner, now, lease)
               for c in self.children.values()):
            return True
        tags = self._tags(self.parent_id)
        return tags_held_by_other(tags, self.owner, now, lease)


class Heartbeat:
    """Renews this invocation's claims (runs: its trials', or a search sweep's parent) while its
    trials run (a thread on the driver) and releases them at the end, so another `scalelab run`
    may take them at once. A claim whose owner died expires after the lease (SCALELAB_LEASE_S)."""

    def __init__(self, tracker: Claims, run_ids: list[str]):
        self.tracker, self.run_ids = tracker, run_ids
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="scalelab-heartbeat", daemon=True)

    def _loop(self) -> None:
        interval = max(1.0, lease_seconds() / 6)
        warned: set[str] = set()
        while not self.stop.wait(interval):
            try:
                lost = set(self.tracker.heartbeat(self.run_ids)) - warned
            except Exception:  # noqa: BLE001 - tracking down: the claim may lapse, training goes on
                continue
            if lost:
                warned |= lost
                what = ("the sweep's claim" if self.tracker.parent_id in lost
                        else f"{len(lost)} trial claim(s)")
                print(f"[{self.tracker.sweep}] warning: {what} lapsed (no heartbeat reached MLflow for a whole "
                      "lease) and another scalelab run took it over; this run stops those trials and sends no more "
                      "of their results to MLflow (they stay in the trials' journals)", file=sys.stderr, flush=True)

    def __enter__(self):
        if self.run_ids:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        try:
            self.tracker.heartbeat(self.run_ids, release=True)  # failed or interrupted ones too
        except Exception:  # noqa: BLE001 - unreachable: the claims expire after the lease instead
            pass
        return False
