"""`scalelab run`: a sweep → Ray Tune trials → MLflow runs, resumable and deduplicated.

Grid mode runs every trial of `spec.trials()` whose hash has no result in the experiment yet;
search mode asks Optuna (persistent study) for the samples still owed. Tune's own experiment
state is not used for resuming: each run is a fresh Tune experiment over what is left, and an
interrupted trial resumes from the checkpoint kept under `<storage>/trials/<experiment>/<hash>`.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, TextIO

import numpy as np
from ray import tune

from trainer.config import UserError

from .tracking import MlflowTrackingCallback, SweepTracker
from .layout import DONE_OUTCOMES, TAG_ERROR, TAG_HASH, TAG_LABEL, TAG_OUTCOME
from .tracking_query import finished_hashes
from .trainable import FAULT_ENV, TrialContext, run_trial

DEFAULT_STORAGE = ".scalelab"
# On a cluster the driver's working directory is a Ray Job's throwaway copy: keep state in home.
CLUSTER_STORAGE = os.path.join("~", ".scalelab")
GRID_OBJECTIVE = ("final_val_loss", "min")  # what "best so far" means for a grid sweep


@dataclass
class SweepSummary:
    name: str
    total: int                      # trials of the sweep (grid) or samples asked for (search)
    outcomes: dict[str, str] = field(default_factory=dict)   # hash -> finished|diverged|failed
    errors: dict[str, str] = field(default_factory=dict)     # label -> last error line
    ran: int = 0                    # trials started by this invocation
    parent_run_id: str | None = None
    tuning_cost: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.count("finished") - self.count("diverged"))

    def text(self) -> str:
        lines = [f"sweep {self.name}: {self.count('finished')} finished, {self.count('diverged')} diverged, "
                 f"{self.count('failed')} failed, {self.remaining} not done of {self.total} "
                 f"({self.ran} run now)"]
        for label, err in self.errors.items():
            lines.append(f"  failed: {label}: {err}")
        if self.interrupted:
            lines.append("  interrupted: nothing is lost; run the same command again to continue")
        elif self.remaining:
            lines.append("  run the same command again to finish the rest (finished trials are skipped)")
        return "\n".join(lines)


# --- progress ------------------------------------------------------------------------------

class ProgressPrinter(tune.Callback):
    """One compact line per change: done / running / failed / diverged, best so far, ETA."""

    def __init__(self, name: str, to_run: int, resolve: Callable[[dict], Any], metric: str, mode: str,
                 best: tuple[float, str] | None = None, out: TextIO = sys.stdout,
                 work: dict[str, float] | None = None):
        self.name, self.to_run, self.resolve, self.metric, self.mode = name, to_run, resolve, metric, mode
        self.best, self.out = best, out
        # Estimated compute seconds per pending trial (grid mode). Trials run small-to-large, so a
        # count-based ETA promises minutes the wide trials take back; the estimate alone misses the
        # fixed per-trial cost (start-up, data, evals) and this machine's real speed. A trial's
        # cost is a + b·estimate, fitted to the durations of the trials that ended.
        self.work = work or {}
        self.finished_work: list[str] = []      # hashes of ended trials
        self.durations: list[float] = []        # their observed durations, same order
        self.started: dict[str, float] = {}     # trial_id -> start time
        self.outcomes: dict[str, str] = {}
        self.running: set[str] = set()
        self.announced: set[str] = set()   # trials whose resume was reported in this attempt
        self.started_at: float | None = None

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best[0] if self.mode == "min" else value > self.best[0]

    def _line(self, note: str = "") -> None:
        done = len(self.outcomes)
        count = {o: sum(1 for v in self.outcomes.values() if v == o) for o in ("finished", "diverged", "failed")}
        best = f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        eta = "-"
        if done and self.started_at is not None and done < self.to_run:
            elapsed = time.time() - self.started_at
            if self.work and self.finished_work:
                a, b = self._cost_model()
                done_cost = sum(a + b * self.work[h] for h in self.finished_work)
                left_cost = sum(a + b * self.work[h] for h in set(self.work) - set(self.finished_work))
                eta = _duration(elapsed / max(done_cost, 1e-9) * left_cost)
            else:
                eta = _duration(elapsed / done * (self.to_run - done))
        elif done >= self.to_run:
            eta = "0s"
        print(f"[{self.name}] {done}/{self.to_run} done ({count['finished']} finished, "
              f"{count['diverged']} diverged, {count['failed']} failed), {len(self.running)} running | "
              f"{best} | ETA {eta}" + (f" | {note}" if note else ""), file=self.out, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        now = time.time()
        if self.started_at is None:
            self.started_at = now
        self.started.setdefault(trial.trial_id, now)
        self.running.add(trial.trial_id)
        self.announced.discard(trial.trial_id)
        self._line(f"started {self.resolve(trial.config).label}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        payload = result.get("scalelab") or {}
        if payload.get("skipped"):
            self.outcomes[trial.trial_id] = "finished"
            return
        if payload.get("resumed_from") is not None and trial.trial_id not in self.announced:
            self.announced.add(trial.trial_id)
            self._line(f"resumed {self.resolve(trial.config).label} from step {payload['resumed_from']}")
        metrics = payload.get("metrics") or {}
        if not metrics.get("final"):
            return
        self._count_work(trial)
        self.outcomes[trial.trial_id] = metrics.get("status", "finished")
        value = metrics.get(self.metric)
        label = self.resolve(trial.config).label
        if isinstance(value, (int, float)) and self._better(float(value)):
            self.best = (float(value), label)
        self.running.discard(trial.trial_id)
        self._line(f"{self.outcomes[trial.trial_id]} {label}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"retrying {self.resolve(trial.config).label} from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._count_work(trial)
        self.outcomes[trial.trial_id] = "failed"
        self.running.discard(trial.trial_id)
        self._line(f"failed {self.resolve(trial.config).label}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def _count_work(self, trial) -> None:
        trial_hash = self.resolve(trial.config).hash
        if trial.trial_id in self.outcomes or trial_hash not in self.work:  # once per trial
            return
        if trial.trial_id in self.started:
            self.finished_work.append(trial_hash)
            self.durations.append(time.time() - self.started[trial.trial_id])

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


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# --- resolving Tune configs back to scalelab trials ------------------------------------------

class TrialIndex:
    """Tune trial config → scalelab Trial (grid: by hash; search: `spec.resolve`, cached)."""

    def __init__(self, spec, trials: list):
        self.spec = spec
        self.by_hash = {t.hash: t for t in trials}
        self._cache: dict[str, Any] = {}

    def __call__(self, config: dict):
        if "scalelab_trial" in config:
            return self.by_hash[config["scalelab_trial"]["hash"]]
        key = repr(sorted(config.items()))
        if key not in self._cache:
            try:
                self._cache[key] = self.spec.resolve(dict(config))
            except UserError as err:  # a sampled point the config rejects: that trial fails, not the sweep
                self._cache[key] = SimpleNamespace(
                    hash=None, config=None, label=f"invalid point {dict(config)} ({err})",
                    resources={"cpu": self.spec.resources["cpu"], "gpu": 0.0})
        return self._cache[key]


def grid_payload(trial) -> dict:
    return {"hash": trial.hash, "label": trial.label, "resources": dict(trial.resources),
            "config": trial.config.model_dump()}


def placement(resources: dict, has_gpu: bool):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    bundle = {"CPU": float(resources.get("cpu", 1))}
    gpu = float(resources.get("gpu") or 0) if has_gpu else 0.0
    if gpu > 0:
        bundle["GPU"] = gpu
    return PlacementGroupFactory([bundle])


def n_params_of(trial) -> int | None:
    from trainer.estimate import estimate

    try:
        return int(estimate(trial.config)["n_params"])
    except Exception:  # noqa: BLE001 - a param we can live without; the final metrics have it
        return None


# --- the run -------------------------------------------------------------------------------

@dataclass
class RunOptions:
    tracking_uri: str
    storage: str = DEFAULT_STORAGE
    address: str | None = None
    max_concurrent: int | None = None
    num_cpus: int | None = None
    out: TextIO = sys.stdout


def run_sweep(spec, opts: RunOptions) -> SweepSummary:
    storage = os.path.abspath(os.path.expanduser(opts.storage))
    os.makedirs(storage, exist_ok=True)
    done = finished_hashes(opts.tracking_uri, spec.experiment)  # also refuses runs of an older identity rule
    tracker = SweepTracker(opts.tracking_uri, spec.experiment, spec.name, spec.mode)
    summary = SweepSummary(spec.name, 0, parent_run_id=tracker.parent_id)
    print(f"[{spec.name}] tracking {opts.tracking_uri} (experiment {spec.experiment!r}, "
          f"parent run {tracker.parent_id}); storage {storage}", file=opts.out, flush=True)
    if spec.mode == "search":
        plan = _plan_search(spec, tracker, storage, opts)
    else:
        plan = _plan_grid(spec, tracker, done, opts)
    summary.total = plan.total
    if plan.to_run > 0:
        summary.interrupted = _execute(spec, plan, tracker, storage, opts)
        summary.ran = plan.to_run
        tracker.refresh()
    summary.tuning_cost = tracker.finish_parent()
    _fill_outcomes(summary, spec, plan, tracker)
    print(summary.text(), file=opts.out, flush=True)
    print(f"  browse: {browse_hint(opts.tracking_uri)} (experiment {spec.experiment!r})", file=opts.out, flush=True)
    return summary


def browse_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return f"mlflow ui --backend-store-uri {tracking_uri}"


@dataclass
class Plan:
    total: int
    to_run: int
    index: TrialIndex
    param_space: dict
    known: dict = field(default_factory=dict)     # search: hash -> objective of done samples
    searcher: Any = None
    objective: tuple[str, str] = GRID_OBJECTIVE
    done_before: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)      # grid: hash -> estimated compute seconds of pending trials


def _plan_grid(spec, tracker: SweepTracker, done: dict[str, str], opts: RunOptions) -> Plan:
    trials = spec.trials()
    done = dict(done)
    done.update({h: c.outcome for h, c in tracker.children.items() if c.outcome in DONE_OUTCOMES})
    pending = [t for t in trials if t.hash not in done]
    print(f"[{spec.name}] {len(trials)} trials: {len(trials) - len(pending)} already done, "
          f"{len(pending)} to run", file=opts.out, flush=True)
    space = {"scalelab_trial": tune.grid_search([grid_payload(t) for t in pending])} if pending else {}
    return Plan(total=len(trials), to_run=len(pending), index=TrialIndex(spec, trials), param_space=space,
                done_before={t.hash: done[t.hash] for t in trials if t.hash in done},
                work={t.hash: _estimated_seconds(t) for t in pending})


def _plan_search(spec, tracker: SweepTracker, storage: str, opts: RunOptions) -> Plan:
    from .search import make_searcher

    _settle_search_storage(spec, opts.tracking_uri, storage)
    s = spec.search
    done_runs = [r for r in tracker.child_runs() if r.data.tags.get(TAG_OUTCOME) in DONE_OUTCOMES]
    known = {r.data.tags[TAG_HASH]: r.data.metrics.get(s.metric) for r in done_runs}
    remaining = max(0, s.num_samples - len(known))
    searcher, note = None, ""
    if remaining:
        searcher, _, requeued = make_searcher(spec, storage)
        note = f", {requeued} interrupted sample(s) re-queued" if requeued else ""
    print(f"[{spec.name}] search: {len(known)} of {s.num_samples} samples done, {remaining} to run "
          f"(study {s.study_name!r} at {s.storage}{note})", file=opts.out, flush=True)
    return Plan(total=s.num_samples, to_run=remaining, index=TrialIndex(spec, []), param_space={},
                known=known, searcher=searcher, objective=(s.metric, s.mode),
                done_before={h: "done" for h in known})


def _estimated_seconds(trial) -> float:
    """Compute time of a trial from the trainer's estimate, on the device it will use."""
    from trainer.estimate import estimate

    cost = estimate(trial.config)
    return cost["seconds_gpu"] if trial.resources.get("gpu") else cost["seconds_cpu"]


def _settle_search_storage(spec, tracking_uri: str, storage: str) -> None:
    """A default study location follows the effective tracking URI: next to an SQLite MLflow
    database, else in the sweep storage (never in a Ray Job's throwaway working directory)."""
    from dataclasses import replace

    from .from_study import sqlite_path
    from .spec import default_optuna_storage

    if not spec.search.storage_is_default:
        return
    if sqlite_path(tracking_uri) is not None:
        url = default_optuna_storage(tracking_uri)
    else:
        url = "sqlite:///" + os.path.join(storage, "optuna.db")
    spec.search = replace(spec.search, storage=url)


def _execute(spec, plan: Plan, tracker: SweepTracker, storage: str, opts: RunOptions) -> bool:
    """Run the Tune experiment; True when it was interrupted (Ctrl-C)."""
    from .ray_local import ray_session

    metric, mode = plan.objective
    ctx = TrialContext(trials_root=os.path.join(storage, "trials", spec.experiment),
                       spec=spec if spec.mode == "search" else None, objective=metric, objective_mode=mode,
                       known=plan.known, fault_inject=os.environ.get(FAULT_ENV))
    with ray_session(opts.address, opts.num_cpus) as resources:
        has_gpu = resources.get("GPU", 0) > 0
        _check_fits(spec, plan, resources, opts)
        tracking = MlflowTrackingCallback(tracker, plan.index, n_params_of, known=set(plan.known))
        progress = ProgressPrinter(spec.name, plan.to_run, plan.index, metric, mode,
                                   best=_best_before(tracker, metric, mode), out=opts.out, work=plan.work)
        tuner = _tuner(spec, plan, ctx, [tracking, progress], storage, opts, has_gpu)
        results = tuner.fit()
    # Ctrl-C makes Tune stop its trials and return early: fewer trials ended than planned.
    return results.num_terminated + results.num_errors < plan.to_run


def _tuner(spec, plan: Plan, ctx: TrialContext, callbacks: list, storage: str, opts: RunOptions, has_gpu: bool):
    index = plan.index
    trainable = tune.with_parameters(run_trial, ctx=ctx)
    if spec.mode == "search":
        trainable = tune.with_resources(trainable, lambda config: placement(index(config).resources, has_gpu))
        dirname = lambda t: t.trial_id  # noqa: E731
    else:
        trainable = tune.with_resources(
            trainable, lambda config: placement(config["scalelab_trial"]["resources"], has_gpu))
        dirname = lambda t: t.config["scalelab_trial"]["hash"]  # noqa: E731
    tune_config = tune.TuneConfig(
        num_samples=plan.to_run if spec.mode == "search" else 1, search_alg=plan.searcher,
        max_concurrent_trials=opts.max_concurrent or spec.concurrency,
        trial_dirname_creator=dirname, trial_name_creator=dirname,
        reuse_actors=True)  # a new worker per trial would re-import torch every time (seconds)
    run_config = tune.RunConfig(
        name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=os.path.join(storage, "tune"),
        failure_config=tune.FailureConfig(max_failures=spec.retries), callbacks=callbacks, verbose=0)
    return tune.Tuner(trainable, param_space=plan.param_space, tune_config=tune_config, run_config=run_config)


def _check_fits(spec, plan: Plan, resources: dict, opts: RunOptions) -> None:
    """A trial asking for more CPUs than the cluster has would wait forever: say so now."""
    want = float(spec.resources.get("cpu", 1))
    have = float(resources.get("CPU", 0))
    if want > have:
        raise UserError(f"{spec.source}: resources.cpu={want:g} per trial, but the Ray cluster has only "
                        f"{have:g} CPUs; lower resources.cpu or use a bigger cluster")
    gpu = spec.resources.get("gpu")
    if isinstance(gpu, (int, float)) and gpu > 0 and resources.get("GPU", 0) == 0:
        print(f"[{spec.name}] note: the sweep asks for {gpu:g} GPU per trial but the cluster has none; "
              "running on CPU", file=opts.out, flush=True)


def _best_before(tracker: SweepTracker, metric: str, mode: str) -> tuple[float, str] | None:
    best = None
    for run in tracker.child_runs():
        value = run.data.metrics.get(metric)
        if run.data.tags.get(TAG_OUTCOME) != "finished" or value is None or not math.isfinite(value):
            continue
        if best is None or (value < best[0] if mode == "min" else value > best[0]):
            best = (value, run.data.tags.get(TAG_LABEL, run.info.run_id))
    return best


def _fill_outcomes(summary: SweepSummary, spec, plan: Plan, tracker: SweepTracker) -> None:
    """The state of the whole sweep after this run (not only what ran now)."""
    if spec.mode == "grid":
        for trial in spec.trials():
            child = tracker.children.get(trial.hash)
            outcome = child.outcome if child and child.outcome else plan.done_before.get(trial.hash)
            if outcome:
                summary.outcomes[trial.hash] = outcome
        labels = {t.hash: t.label for t in spec.trials()}
    else:
        for trial_hash, child in tracker.children.items():
            if child.outcome:
                summary.outcomes[trial_hash] = child.outcome
        labels = {}
    for run in tracker.child_runs():
        tags = run.data.tags
        if tags.get(TAG_OUTCOME) == "failed" and tags.get(TAG_HASH) in summary.outcomes:
            error = (tags.get(TAG_ERROR) or "").strip().splitlines()
            label = labels.get(tags[TAG_HASH], tags.get(TAG_LABEL, run.info.run_id))
            summary.errors[label] = error[-1] if error else "unknown error"
