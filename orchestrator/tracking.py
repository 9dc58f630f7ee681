"""MLflow side of a sweep (layout in docs/CONTRACTS.md), written only from the Ray driver.

`SweepTracker` owns the runs: one parent run per sweep (found again by its tags on reruns), one
child run per trial hash (found again by parent + hash, so no sequence of interruptions makes a
duplicate). `MlflowTrackingCallback` is the Tune callback that feeds it. Ray's own
MLflowLoggerCallback is not used: it makes flat runs, logs one key per call and duplicates
runs after a restore.

Metrics go through `MlflowClient.log_batch` in chunks of MLflow's per-call limits. Each report
carries the timestamp the worker stamped on it, so re-sending a report after a crash writes
identical rows (which the SQL store ignores); the tag `scalelab.logged_step` records the last
step fully written so replays after a resume are skipped outright.

Before a grid sweep runs, `SweepTracker.claim` records in each pending trial's run which `scalelab
run` holds it (owner + heartbeat tags), so concurrent invocations never run one trial twice; a
search sweep is claimed as a whole, on its parent run (`SweepTracker.claim_sweep`). The
callback's writes go through `outbox.Outbox`, so an MLflow outage never stalls training, and
each write first checks that the claim covering its trial is still this invocation's
(`SweepTracker.taken_over`): a claim that lapsed during an outage and was taken over gets no more
writes from here.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import yaml
from ray import tune

from .layout import (ARTIFACT_DIR, CONFIG_ARTIFACT, DONE_OUTCOMES, MULTIPLIERS_ARTIFACT, OUTCOME_FAILED, OUTCOME_FINISHED, KIND_SWEEP, KIND_TRIAL, MULTIPLIER_COLUMNS, TAG_CODE, TAG_ERROR,
                     TAG_HASH, TAG_HEARTBEAT, TAG_IDENTITY, TAG_KIND, TAG_LABEL, TAG_LOGGED_STEP, TAG_MODE,
                     TAG_OUTCOME, TAG_OWNER, TAG_PARENT, TAG_SWEEP, quote as _quote, search_all, sqlite_lock,
                     sqlite_path)
from .trial import IDENTITY_VERSION, REPORT_KEY, parametrization_label

# MLflow's limits per log_batch call (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_TAG_CHARS = 8000

# Claims (docs/CONTRACTS.md, "MLflow layout"): a trial is held by the `scalelab run` named in its run's
# owner tag while the heartbeat tag is younger than the lease; the owner renews it meanwhile.
LEASE_ENV = "SCALELAB_LEASE_S"
DEFAULT_LEASE_S = 180.0
# After creating or taking over runs, wait this long before re-reading them: longer than a run's
# start time (stamped by the client) can precede its commit, so every older rival is visible.
CLAIM_SETTLE_S = 2.0

# (owner, run id) -> epoch ms of our last claim write on that run known to hold, and -> the owner
# that took the run over from us. Module-level: Tune works on copies of the tracker, and the
# heartbeat thread's tracker and the callback's copy must agree.
_RENEWED: dict[tuple[str, str], int] = {}
_TAKEN: dict[tuple[str, str], str] = {}


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)


def new_owner_id() -> str:
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """An owner on this machine whose process is gone (killed): its claim needs no lease to
    lapse. Owners on other machines only expire."""
    import socket

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


# --- small helpers ------------------------------------------------------------------------

def code_version() -> str:
    """`git describe` of the source tree (+ '-dirty'), else SCALELAB_CODE_VERSION (set by
    `scalelab submit`, whose upload has no .git), else the package version."""
    if os.environ.get("SCALELAB_CODE_VERSION"):
        return os.environ["SCALELAB_CODE_VERSION"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"scalelab-{version('scalelab')}"
    except PackageNotFoundError:
        return "unknown"


def flat_params(cfg) -> dict[str, str]:
    """Every TrainConfig field as an MLflow param (lists/dicts as JSON)."""
    out = {}
    for key, value in cfg.model_dump().items():
        out[key] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
    return out


def numeric_metrics(report: dict) -> dict[str, float]:
    """The numeric keys of a trainer report (drops `status`, the `final` flag and non-numbers)."""
    return {k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class ChildRun:
    run_id: str
    logged_step: int = -1          # last step whose metrics are all in MLflow
    outcome: str | None = None
    n_params: int = 0              # params stored; fewer than expected after a crash in setup
    owner: str = ""                # TAG_OWNER: the invocation that claimed the trial
    heartbeat_ms: int = 0          # TAG_HEARTBEAT

    def held_by_other(self, me: str, now_ms: int, lease_s: float) -> bool:
        return held_by_other(self.owner, self.heartbeat_ms, me, now_ms, lease_s)


# --- the tracker ------------------------------------------------------------------------------

class SweepTracker:
    """Parent and child runs of one sweep in one experiment."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, mode: str):
        from mlflow.tracking import MlflowClient

        self.tracking_uri, self.sweep, self.mode = tracking_uri, sweep, mode
        self.code_version = code_version()
        self.owner = new_owner_id()
        self.claimed: list[str] = []      # run ids this invocation claimed (trials, or the parent)
        self.sweep_claimed = False        # the claim is on the parent run (search sweeps)
        with sqlite_lock(tracking_uri):  # MLflow creates a new database's schema with its client
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.experiment_id = self._experiment_id(experiment)
            self.parent_id = self._parent_run()
        self.children: dict[str, ChildRun] = self._load_children()

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage != "active":
                from trainer.config import UserError
                raise UserError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                                "restore) or set another `experiment:` in the sweep file")
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location_for(self.tracking_uri))

    def _search(self, filter_string: str, order_by: list[str] | None = None) -> list:
        return list(search_all(self.client, self.experiment_id, filter_string, order_by))

    def _oldest_first(self, filter_string: str) -> list:
        """Runs by start time, then run id: every reader agrees which one is the oldest."""
        return sorted(self._search(filter_string), key=lambda r: (r.info.start_time, r.info.run_id))

    def _parent_run(self) -> str:
        query = f"tags.`{TAG_KIND}` = {_quote(KIND_SWEEP)} and tags.`{TAG_SWEEP}` = {_quote(self.sweep)}"
        found = self._oldest_first(query)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, TAG_CODE, self.code_version)
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags={
            TAG_KIND: KIND_SWEEP, TAG_SWEEP: self.sweep, TAG_MODE: self.mode, TAG_CODE: self.code_version})
        # Another invocation may have created one at the same time: the oldest wins, ours goes.
        # (SQLite: we hold the database's lock, nobody else can have.)
        if sqlite_path(self.tracking_uri) is None:
            time.sleep(CLAIM_SETTLE_S)
        oldest = self._oldest_first(query)[0].info.run_id
        if oldest != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return oldest

    def _load_children(self) -> dict[str, ChildRun]:
        children: dict[str, ChildRun] = {}
        for run in self._oldest_first(f"tags.`{TAG_PARENT}` = {_quote(self.parent_id)}"):
            tags = run.data.tags
            trial_hash = tags.get(TAG_HASH)
            if trial_hash and trial_hash not in children:  # the oldest run of a hash is the one
                children[trial_hash] = ChildRun(run.info.run_id, int(tags.get(TAG_LOGGED_STEP, -1)),
                                                tags.get(TAG_OUTCOME), n_params=len(run.data.params),
                                                owner=tags.get(TAG_OWNER, ""),
                                                heartbeat_ms=int(tags.get(TAG_HEARTBEAT) or 0))
        return children

    # --- claims ---
    def _identity_tags(self, trial) -> dict[str, str]:
        return {TAG_PARENT: self.parent_id, TAG_KIND: KIND_TRIAL, TAG_HASH: trial.hash,
                TAG_IDENTITY: str(IDENTITY_VERSION), TAG_SWEEP: self.sweep,
                TAG_CODE: self.code_version, TAG_MODE: self.mode, TAG_LABEL: trial.label}

    def _claim_tags(self, run_id: str, heartbeat_ms: int) -> None:
        from mlflow.entities import RunTag

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
        self.children = self._load_children()
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
            owner = tags.get(TAG_OWNER, "")
            if held_by_other(owner, int(tags.get(TAG_HEARTBEAT) or 0), self.owner, int(time.time() * 1000),
                             lease_seconds()):
                return owner
            if not self._take(self.parent_id):
                return self._tags(self.parent_id).get(TAG_OWNER, "")
        self.sweep_claimed = True
        return None

    def _tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

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
        from mlflow.entities import RunTag

        lost = []
        for run_id in list(self.claimed if run_ids is None else run_ids):
            if release:
                if self._tags(run_id).get(TAG_OWNER) == self.owner:
                    self.client.log_batch(run_id, tags=[RunTag(TAG_HEARTBEAT, "0")], synchronous=True)
                _RENEWED.pop((self.owner, run_id), None)
            elif self._renew(run_id) is not None:
                lost.append(run_id)
        return lost

    def refresh(self) -> None:
        """Re-read the children (Tune works on a copy of the callback, hence of this tracker)."""
        self.children = self._load_children()

    def child_runs(self) -> list:
        """Full MLflow runs of this sweep's trials (metrics included)."""
        return self._search(f"tags.`{TAG_PARENT}` = {_quote(self.parent_id)}")

    # --- trial runs ---
    def start_child(self, trial, n_params: int | None) -> ChildRun:
        """Create or re-open the run of `trial`; params and CONFIG_ARTIFACT are written once."""
        child = self.children.get(trial.hash)
        if child is not None:
            self.client.update_run(child.run_id, status="RUNNING")
        else:
            # One call creates the run with the tags that identify it: no half-identified runs.
            run = self.client.create_run(self.experiment_id, run_name=trial.label, tags=self._identity_tags(trial))
            child = self.children[trial.hash] = ChildRun(run.info.run_id)
        params = flat_params(trial.config)
        params["parametrization"] = parametrization_label(trial.config)
        if n_params is not None:
            params["n_params"] = str(int(n_params))
        if child.n_params < len(params):  # new, or a crash cut its setup short (re-logging is a no-op)
            self.log_text(child.run_id, yaml.safe_dump(trial.config.model_dump(), sort_keys=True), CONFIG_ARTIFACT)
            self.log_params(child.run_id, params)
            child.n_params = len(params)
        return child

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for part in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=part, synchronous=True)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_report(self, child: ChildRun, report: dict, timestamp_ms: int) -> bool:
        """Write one trainer report at its step; False when that step is already in MLflow."""
        from mlflow.entities import Metric, RunTag

        step = int(report["step"])
        if step <= child.logged_step:
            return False
        metrics = [Metric(k, v, timestamp_ms, step) for k, v in sorted(numeric_metrics(report).items())]
        done_tag = RunTag(TAG_LOGGED_STEP, str(step))
        # The logged-step tag rides in the last call: once it is stored, the whole step is.
        parts = list(chunks(metrics, MAX_METRICS_PER_BATCH - 1)) or [[]]
        for i, part in enumerate(parts):
            tags = [done_tag] if i == len(parts) - 1 else []
            self.client.log_batch(child.run_id, metrics=part, tags=tags, synchronous=True)
        child.logged_step = step
        return True

    def finish_child(self, child: ChildRun, outcome: str, error: str | None = None,
                     multipliers: list[dict] | None = None) -> None:
        if multipliers is not None:
            self.log_text(child.run_id, multipliers_csv(multipliers), MULTIPLIERS_ARTIFACT)
        self.client.set_tag(child.run_id, TAG_OUTCOME, outcome)
        if error is not None:
            self.client.set_tag(child.run_id, TAG_ERROR, error[-MAX_TAG_CHARS:])
        elif child.outcome == OUTCOME_FAILED:  # a failed trial that now succeeded: drop the old error
            try:
                self.client.delete_tag(child.run_id, TAG_ERROR)
            except Exception:  # noqa: BLE001 - the tag may not exist; nothing to clean then
                pass
        child.outcome = outcome
        self.client.set_terminated(child.run_id, "FAILED" if outcome == OUTCOME_FAILED else "FINISHED")

    # --- the parent ---
    def others_active(self) -> bool:
        """Another live `scalelab run` still holds a claim in this sweep (a trial's, or a search
        sweep's on the parent): it closes the parent when it ends, not this invocation."""
        now, lease = int(time.time() * 1000), lease_seconds()
        self.refresh()
        if any(c.outcome not in DONE_OUTCOMES and c.held_by_other(self.owner, now, lease)
               for c in self.children.values()):
            return True
        tags = self._tags(self.parent_id)
        return held_by_other(tags.get(TAG_OWNER, ""), int(tags.get(TAG_HEARTBEAT) or 0), self.owner, now, lease)

    def finish_parent(self, log_cost: bool = True) -> dict[str, float]:
        """Record the tuning cost (trials run, their summed FLOPs) and close the parent run."""
        cost = {}
        if log_cost:
            runs = [r for r in self.child_runs() if r.data.tags.get(TAG_OUTCOME)]
            flops = sum(r.data.metrics.get("flops", 0.0) for r in runs
                        if math.isfinite(r.data.metrics.get("flops", 0.0)))
            cost = {"tuning_trials": float(len(runs)), "tuning_flops": float(flops)}
            from mlflow.entities import Metric
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(k, v, now, 0) for k, v in cost.items()],
                                  synchronous=True)
        self.client.set_terminated(self.parent_id, "FINISHED")
        return cost


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite-tracked experiment live next to the database file, not in the
    working directory of whoever created the experiment; servers choose their own."""
    from pathlib import Path

    db_path = sqlite_path(tracking_uri)
    if db_path is None:
        return None
    return (Path(db_path).resolve().parent / ARTIFACT_DIR).as_uri()


def multipliers_csv(rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MULTIPLIER_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# --- the Tune callback ------------------------------------------------------------------------

@dataclass
class TrialRecord:
    trial: Any                      # orchestrator.trial.Trial
    child: ChildRun | None          # set once its run is started (by the outbox's thread)
    attempts: int = 0
    tracked: bool = False           # False for an invalid point or a sampled point already known
    taken_by: str = ""              # the scalelab run that took this trial's claim over: no more writes
    ended: bool = False             # its final report came (a retried pack does not restart it)


class MlflowTrackingCallback(tune.Callback):
    """Driver-side Tune callback: every `tune.report` of a trial → one step of its MLflow run.

    `resolve(config)` maps a Tune trial's config to its scalelab Trial, or to a fused Pack
    (packing.py) whose members each have their own run: a report goes to the member its
    `hash` names. `known` holds the hashes that already have a result (their trials only
    replay it and get no new run). With an `outbox` (orchestrator/outbox.py) every MLflow
    write is queued and sent, in order, by its thread: Tune's loop, hence training, never
    waits for tracking. Each write of a trial first checks that this invocation still holds
    the claim covering it (`SweepTracker.taken_over`); once another `scalelab run` took it
    over (ours lapsed while MLflow was unreachable), the trial's writes are dropped with one
    line: its run and outcome are the new owner's, and this run's reports stay in the
    trial's journal."""

    def __init__(self, tracker: SweepTracker, resolve: Callable[[dict], Any],
                 n_params: Callable[[Any], int | None], known: set | None = None, outbox=None):
        self.tracker, self.resolve, self.n_params = tracker, resolve, n_params
        self.known = set(known or ())
        self.records: dict[str, list[TrialRecord]] = {}   # Tune trial id -> one record per member
        self.outbox = outbox
        self._told: set[str] = set()   # claims (run ids) whose loss was said

    def _send(self, fn: Callable[[], object]) -> None:
        if self.outbox is None:
            fn()
        else:
            self.outbox.put(fn)

    def _send_for(self, rec: TrialRecord, fn: Callable[[], object]) -> None:
        """Queue a write of `rec`'s trial, made only while this invocation holds its claim."""
        def write():
            if not rec.taken_by:
                rec.taken_by = self.tracker.taken_over(rec.trial.hash) or ""
                if rec.taken_by:
                    self._tell_taken(rec)
            if not rec.taken_by:
                fn()
        self._send(write)

    def _tell_taken(self, rec: TrialRecord) -> None:
        claim = self.tracker.claim_run(rec.trial.hash) or ""
        if claim in self._told:
            return
        self._told.add(claim)
        why = (f"taken over by another scalelab run ({rec.taken_by}): this run's claim lapsed (no heartbeat "
               "reached MLflow for a whole lease)")
        if claim == self.tracker.parent_id:
            note = (f"sweep {why}; this run sends no more results to MLflow (the other run's are kept; "
                    "this run's reports stay in each trial's journal, reports.jsonl)")
        else:
            note = (f"trial {rec.trial.label} {why}; its results from this run were not sent to MLflow (the "
                    "other run's are kept; this run's reports stay in the trial's journal, reports.jsonl)")
        if self.outbox is not None:
            self.outbox.tell(note)
        else:
            print(f"[{self.tracker.sweep}] {note}", file=sys.stderr, flush=True)

    def taken(self, trial_id: str) -> bool:
        """The Tune trial's claim was taken over by another `scalelab run` (known here already);
        for a fused pack, any member's: the pack stops, so the new owner is that member's only
        writer (the other members resume from their checkpoints on the next run)."""
        return any(rec.tracked and (bool(rec.taken_by) or self.tracker.lost(rec.trial.hash))
                   for rec in self.records.get(trial_id, ()))

    def after_writes(self, fn: Callable[[], object]) -> None:
        """Run `fn` once the MLflow writes queued so far are done (a trial's child run then
        exists): other callbacks that need a run id go through here, in the outbox's order."""
        self._send(fn)

    def records_of(self, tune_trial) -> list[TrialRecord]:
        recs = self.records.get(tune_trial.trial_id)
        if recs is None:
            from .packing import trials_of

            recs = self.records[tune_trial.trial_id] = [self._new_record(t)
                                                        for t in trials_of(self.resolve(tune_trial.config))]
        return recs

    def _new_record(self, trial) -> TrialRecord:
        rec = TrialRecord(trial, None)
        if trial.hash is not None and trial.hash not in self.known:  # not an invalid point or a known result
            rec.tracked = True

            def start(rec=rec, trial=trial):
                rec.child = self.tracker.start_child(trial, self.n_params(trial))
            self._send_for(rec, start)
        return rec

    def record(self, tune_trial, trial_hash: str | None = None) -> TrialRecord | None:
        """The record of a lone trial, or of the pack member whose hash a report names."""
        recs = self.records_of(tune_trial)
        if len(recs) == 1:
            return recs[0]
        return next((r for r in recs if r.trial.hash == trial_hash), None)

    def on_trial_start(self, iteration, trials, trial, **info):
        for rec in self.records_of(trial):
            rec.attempts += 1
            if rec.tracked and rec.attempts > 1 and not rec.ended:
                self._send_for(rec, lambda rec=rec: self.tracker.client.update_run(rec.child.run_id, status="RUNNING"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        payload = result.get(REPORT_KEY) or {}
        rec = self.record(trial, payload.get("hash"))
        if rec is None or not rec.tracked or "metrics" not in payload:
            return
        metrics, ts = payload["metrics"], int(payload["ts"])
        self._send_for(rec, lambda: self.tracker.log_report(rec.child, metrics, ts))
        if metrics.get("final"):
            rec.ended = True
            outcome = metrics.get("status", OUTCOME_FINISHED)
            multipliers = payload.get("multipliers") or []
            self._send_for(rec, lambda: self.tracker.finish_child(rec.child, outcome, multipliers=multipliers))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        for rec in self.records_of(trial):
            if rec.tracked and not rec.ended:  # a pack's members that ended before keep their outcome
                error = error or trial_error_text(trial)
                self._send_for(rec, lambda rec=rec, error=error: self.tracker.finish_child(rec.child, OUTCOME_FAILED,
                                                                                          error=error))


def trial_error_text(tune_trial) -> str:
    """The trial's error: the last lines of its traceback (the exception is at the end)."""
    text = None
    path = getattr(tune_trial, "error_file", None)
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    if not text:
        try:
            text = tune_trial.get_error()
        except Exception:  # noqa: BLE001 - storage unreadable: fall back to a generic message
            text = None
    text = (text or "trial failed (no error text recorded by Ray)").strip()
    lines = text.splitlines()
    return "\n".join(lines[-12:])


