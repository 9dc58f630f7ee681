"""The driver-side Tune callback that feeds a sweep's MLflow runs (run_writes.SweepTracker),
and the Tune stopper that ends a sweep on a long MLflow outage or a lost claim."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from ray import tune

from .layout import OUTCOME_FAILED, OUTCOME_FINISHED
from .outbox import Outbox
from .packing import trials_of
from .run_writes import ChildRun, SweepTracker
from .trial import REPORT_KEY
from .trial_folder import JOURNAL_FILE


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
                    f"this run's reports stay in each trial's journal, {JOURNAL_FILE})")
        else:
            note = (f"trial {rec.trial.label} {why}; its results from this run were not sent to MLflow (the "
                    f"other run's are kept; this run's reports stay in the trial's journal, {JOURNAL_FILE})")
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

    def tag_run(self, rec: TrialRecord, tags: dict[str, str]) -> None:
        """Tag the trial's run now (the caller runs in the outbox's order: after_writes)."""
        if rec.child is not None and not rec.taken_by:
            self.tracker.set_tags(rec.child.run_id, tags)

    def records_of(self, tune_trial) -> list[TrialRecord]:
        recs = self.records.get(tune_trial.trial_id)
        if recs is None:
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
                self._send_for(rec, lambda rec=rec: self.tracker.mark_running(rec.child))

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


class OutageStopper(tune.Stopper):
    """Stops the whole sweep once MLflow has been unreachable for the grace period, or once
    another `scalelab run` took its claim over; stops a trial whose claim was taken over (this
    run's claim lapsed, see MlflowTrackingCallback), so that the new owner is soon its only
    writer."""

    def __init__(self, outbox: Outbox, tracking: "MlflowTrackingCallback | None" = None):
        self.outbox, self.tracking = outbox, tracking

    def __call__(self, trial_id, result) -> bool:
        return self.tracking is not None and self.tracking.taken(trial_id)

    def stop_all(self) -> bool:
        return self.outbox.expired or (self.tracking is not None and self.tracking.tracker.sweep_lost())
