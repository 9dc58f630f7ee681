"""`scalelab run`'s progress: one compact line per change of the sweep (done / running / failed /
diverged, best so far, ETA), from Ray Tune's callbacks on the driver."""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from typing import Any, Callable, TextIO

import numpy as np
from ray import tune

from trainer.config import UserError

from .layout import OUTCOME_FAILED, OUTCOME_FINISHED, OUTCOMES, TAG_LABEL, TAG_OUTCOME
from .packing import trials_of
from .plan import duration
from .trial import REPORT_KEY


PROGRESS_ENV = "SCALELAB_PROGRESS_S"
DEFAULT_PROGRESS_S = 30.0  # a trial's own progress line at most this often (none in a shorter trial)


def trial_progress_s(environ=os.environ) -> float:
    """Seconds between a training trial's own progress lines: $SCALELAB_PROGRESS_S, else 30; 0: none."""
    text = environ.get(PROGRESS_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(f"{PROGRESS_ENV}={text!r}: give seconds between a trial's progress lines "
                        "(a number >= 0; 0 turns them off), or unset it for every 30 s")
    return seconds


def better(value: float, best: tuple[float, str] | None, mode: str) -> bool:
    """Whether a finite `value` beats the best so far ((value, label), or None) in direction `mode`."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best[0] if mode == "min" else value > best[0]


def best_so_far(child_runs: list, metric: str, mode: str) -> tuple[float, str] | None:
    """(value, label) of the best finished trial run recorded before this run."""
    best = None
    for run in child_runs:
        value = run.data.metrics.get(metric)
        if run.data.tags.get(TAG_OUTCOME) == OUTCOME_FINISHED and value is not None and better(value, best, mode):
            best = (value, run.data.tags.get(TAG_LABEL, run.info.run_id))
    return best


class ProgressPrinter(tune.Callback):
    """One compact line per change: done / running / failed / diverged, best so far, ETA."""

    def __init__(self, name: str, to_run: int, resolve: Callable[[dict], Any], metric: str, mode: str,
                 best: tuple[float, str] | None = None, out: TextIO = sys.stdout,
                 work: dict[str, float] | None = None, outbox=None):
        self.outbox = outbox   # orchestrator.outbox.Outbox: its note while MLflow is unreachable
        self.name, self.to_run, self.resolve, self.metric, self.mode = name, to_run, resolve, metric, mode
        self.best, self.out = best, out
        # The ETA is the planned cost of what is left, at the speed observed so far (wall seconds
        # per unit of cost done). A trial's planned cost is a + b·estimate (`work`: estimated
        # compute seconds per pending trial, grid mode; one unit each in a search), a and b fitted
        # to the durations of the trials that ended: trials differ in size many times over, so a
        # count-based ETA is off by as much, and the estimate alone misses the fixed
        # per-trial cost (start-up, data, evals) and this machine's real speed. Running trials
        # count with the share of their steps they reported, so trials still running beside the
        # first to end do not read as wall time spent on nothing (a fused pack's members all do).
        self.work = work or {}
        self.finished_work: list[str] = []      # hashes of ended trials
        self.durations: list[float] = []        # their observed durations, same order
        self.reached: dict[str, float] = {}     # hash -> share of its steps reported so far
        self.resumed_at: dict[str, float] = {}  # hash -> share done before this run (replayed)
        self.started: dict[str, float] = {}     # trial_id -> start time
        self.outcomes: dict[tuple, str] = {}    # (Tune trial id, trial hash) -> outcome
        self.running: set[tuple] = set()
        self.announced: set[str] = set()   # trials whose resume was reported in this attempt
        self.started_at: float | None = None

    def _line(self, note: str = "") -> None:
        tracking = self.outbox.note() if self.outbox is not None else ""
        if tracking and tracking not in note:
            note = f"{note} | {tracking}" if note else tracking
        done = len(self.outcomes)
        count = {o: sum(1 for v in self.outcomes.values() if v == o) for o in OUTCOMES}
        best = f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        eta = "unknown"  # until a trial ended, nothing says how fast this machine is
        if done and self.started_at is not None and done < self.to_run:
            done_cost, left_cost = self._costs()
            if done_cost > 0:
                eta = duration((time.time() - self.started_at) / done_cost * left_cost)
        elif done >= self.to_run:
            eta = "0s"
        counts = ", ".join(f"{count[o]} {o}" for o in OUTCOMES)
        print(f"[{self.name}] {done}/{self.to_run} done ({counts}), {len(self.running)} running | "
              f"{best} | ETA {eta}" + (f" | {note}" if note else ""), file=self.out, flush=True)

    def _members(self, trial) -> list:
        return trials_of(self.resolve(trial.config))

    def on_trial_start(self, iteration, trials, trial, **info):
        now = time.time()
        if self.started_at is None:
            self.started_at = now
        self.started.setdefault(trial.trial_id, now)
        self.running |= {(trial.trial_id, m.hash) for m in self._members(trial)} - set(self.outcomes)
        self.announced.discard(trial.trial_id)
        self._line(f"started {self.resolve(trial.config).label}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        payload = result.get(REPORT_KEY) or {}
        members = self._members(trial)
        member = members[0] if len(members) == 1 else next(
            (m for m in members if m.hash == payload.get("hash")), None)  # a fused pack: the member reporting
        if member is None:
            return
        key = (trial.trial_id, member.hash)
        if payload.get("skipped"):
            self.outcomes[key] = OUTCOME_FINISHED
            self.reached[member.hash] = self.resumed_at[member.hash] = 1.0  # no work, none left
            return
        self._reach(member, payload)
        if payload.get("resumed_from") is not None and trial.trial_id not in self.announced:
            self.announced.add(trial.trial_id)
            self._line(f"resumed {self.resolve(trial.config).label} from step {payload['resumed_from']}")
        metrics = payload.get("metrics") or {}
        if not metrics.get("final") or (payload.get("replay") and key in self.outcomes):
            return  # a retried pack replays the members that ended before: said already
        self._count_work(trial, member, len(members))
        self.outcomes[key] = metrics.get("status", OUTCOME_FINISHED)
        value = metrics.get(self.metric)
        if isinstance(value, (int, float)) and better(float(value), self.best, self.mode):
            self.best = (float(value), member.label)
        self.running.discard(key)
        self._line(f"{self.outcomes[key]} {member.label}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"retrying {self.resolve(trial.config).label} from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        members = self._members(trial)
        for member in members:
            key = (trial.trial_id, member.hash)
            if key not in self.outcomes:  # a pack's members that ended before keep their outcome
                self._count_work(trial, member, len(members))
                self.outcomes[key] = OUTCOME_FAILED
            self.running.discard(key)
        self._line(f"failed {self.resolve(trial.config).label}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running -= {(trial.trial_id, m.hash) for m in self._members(trial)}

    def _count_work(self, trial, member, pack_size: int) -> None:
        if (trial.trial_id, member.hash) in self.outcomes or member.hash not in self.work:  # once per trial
            return
        if trial.trial_id in self.started:  # a pack's members share its wall time
            self.finished_work.append(member.hash)
            self.durations.append((time.time() - self.started[trial.trial_id]) / pack_size)

    def _reach(self, member, payload: dict) -> None:
        """Note how far `member` got; a replayed report is work done before this run."""
        step = (payload.get("metrics") or {}).get("step")
        steps = getattr(getattr(member, "config", None), "steps", None)
        if not isinstance(step, (int, float)) or not steps:
            return
        share = min(1.0, step / steps)
        if payload.get("replay") and member.hash not in self.reached:
            self.resumed_at[member.hash] = share
        self.reached[member.hash] = share

    def _costs(self) -> tuple[float, float]:
        """(cost done in this run, planned cost left), in units of a + b·estimate (one unit per
        trial without an estimate): ended trials are done (a diverged or failed one only up to
        where it got), running ones done to the share of steps they reported, the rest left."""
        a, b = self._cost_model() if self.work and self.finished_work else (0.0, 1.0)
        ended = {h for _, h in self.outcomes}
        seen = ended | set(self.reached) | set(self.work)

        def cost(h: str) -> float:
            return a + b * self.work[h] if h in self.work else (0.0 if self.work else 1.0)

        done = left = 0.0
        for h in seen:
            reached = self.reached.get(h, 1.0 if h in ended else 0.0)
            done += cost(h) * max(0.0, reached - self.resumed_at.get(h, 0.0))
            if h not in ended:
                left += cost(h) * (1.0 - reached)
        if not self.work:  # a search: the trials not sampled yet
            left += max(0, self.to_run - len(seen))
        return done, left

    def _cost_model(self) -> tuple[float, float]:
        """(a, b) of duration ≈ a + b·estimate: fitted once the ended trials differ in size,
        else the estimate plus their median overhead."""
        estimates = [self.work[h] for h in self.finished_work]
        if len(set(estimates)) >= 2:
            b, a = np.polyfit(estimates, self.durations, 1)
            if b > 0:
                return max(a, 0.0), b
        overhead = statistics.median(max(0.0, d - e) for d, e in zip(self.durations, estimates))
        return overhead, 1.0
