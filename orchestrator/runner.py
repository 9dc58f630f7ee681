"""`scalelab run`: a sweep → Ray Tune trials → MLflow runs, resumable and deduplicated.

Grid mode runs every trial of `spec.trials()` whose hash has no result in the experiment yet;
search mode asks Optuna (persistent study) for the samples still owed (sweep_modes.py owns what
differs between the two; locations.py where results go). Tune's own experiment
state is not used for resuming: each run is a fresh Tune experiment over what is left, and an
interrupted trial resumes from the checkpoint kept under `<storage>/trials/<experiment>/<hash>`.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import ray
from ray import tune
from ray.tune.execution.placement_groups import PlacementGroupFactory

from trainer.config import UserError

from .claims import Heartbeat
from .faults import FAULT_ENV, check_faults
from .layout import (DONE_OUTCOMES, OUTCOME_FAILED, OUTCOMES, SWEEP_ARTIFACT, TAG_ERROR, TAG_HASH, TAG_LABEL,
                     TAG_OUTCOME)
from .links import browse_hint, print_study_hint
from .locations import Locations
from .node_check import check_nodes
from .outbox import RUN_HTTP_ENV, Outbox, grace_seconds, outage_message
from .progress import ProgressPrinter, best_so_far
from .ray_local import ray_session
from .results_table import END_OF_RUN_ROWS, format_rows, sweep_rows
from .run_writes import SweepTracker
from .study_link import study_links
from .sweep_modes import sweep_mode
from .tracking_query import finished_hashes
from .trainable import DRIVER_CPU, TrialContext, run_trial
from .trial import trial_cost, workers_of
from .tune_callback import MlflowTrackingCallback, OutageStopper
from .uri_auth import redact


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
        return max(0, self.total - sum(self.count(o) for o in DONE_OUTCOMES))

    def text(self) -> str:
        counts = ", ".join(f"{self.count(o)} {o}" for o in OUTCOMES)
        lines = [f"sweep {self.name}: {counts}, {self.remaining} not done of {self.total} "
                 f"({self.ran} run now)"]
        for label, err in self.errors.items():
            lines.append(f"  failed: {label}: {err}")
        if self.interrupted:
            lines.append("  interrupted: nothing is lost; run the same command again to continue")
        elif self.remaining:
            lines.append("  run the same command again to finish the rest (finished trials are skipped)")
        return "\n".join(lines)


def placement(resources: dict, has_gpu: bool):
    if workers_of(resources) > 1:  # Ray Train's workers reserve their own (trainable.py)
        return PlacementGroupFactory([{"CPU": DRIVER_CPU}])
    bundle = {"CPU": float(resources.get("cpu", 1))}
    gpu = float(resources.get("gpu") or 0) if has_gpu else 0.0
    if gpu > 0:
        bundle["GPU"] = gpu
    return PlacementGroupFactory([bundle])


def n_params_of(trial) -> int | None:
    try:
        return int(trial_cost(trial)["n_params"])
    except Exception:  # noqa: BLE001 - a param we can live without; the final metrics have it
        return None


# --- the run -------------------------------------------------------------------------------

@dataclass
class RunOptions:
    tracking_uri: str | None = None   # --tracking-uri (None: see Locations.resolve)
    storage: str | None = None        # --storage (None: the default of Locations.resolve)
    address: str | None = None
    max_concurrent: int | None = None
    num_cpus: int | None = None
    tracking_grace: float | None = None   # --tracking-grace seconds (None: $SCALELAB_TRACKING_GRACE, 30 min)
    fuse: int | str | None = None     # --fuse (None: the sweep file's `fuse`; packing.py)
    out: TextIO = sys.stdout

    def locations(self, spec) -> Locations:
        return Locations.resolve(spec, self.tracking_uri, self.storage, on_cluster=bool(self.address))


class TrackingOutage(RuntimeError):
    """MLflow stayed unreachable for longer than the grace period; the message says what to do."""


@contextmanager
def short_http_retries():
    """MLflow's own HTTP retries cut to seconds for this run (the outbox retries instead);
    values the user set win."""
    saved = {k: os.environ.get(k) for k in RUN_HTTP_ENV}
    for key, value in RUN_HTTP_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_sweep(spec, opts: RunOptions) -> SweepSummary:
    check_faults(os.environ.get(FAULT_ENV))  # a typo would otherwise fail trials after their retries
    with short_http_retries():
        return _run_sweep(spec, opts)


def _run_sweep(spec, opts: RunOptions) -> SweepSummary:
    where = opts.locations(spec)
    os.makedirs(where.storage, exist_ok=True)
    done = finished_hashes(where.tracking_uri, spec.experiment)  # also refuses runs of an older identity rule
    tracker = SweepTracker(where.tracking_uri, spec.experiment, spec.name, spec.mode,
                           from_study=(spec.from_study or {}).get("study"))
    summary = SweepSummary(spec.name, 0, parent_run_id=tracker.parent_id)
    print(f"[{spec.name}] tracking {redact(where.tracking_uri)} (experiment {spec.experiment!r}, "
          f"parent run {tracker.parent_id}); storage {where.storage}", file=opts.out, flush=True)
    mode = sweep_mode(spec, where.study_url, opts.fuse)
    mode.plan_run(tracker, done, opts.out)
    mode.claim(tracker, opts.out)
    mode.pack(opts.out)
    summary.total = mode.total
    if mode.to_run > 0:
        outbox = Outbox(grace_seconds(opts.tracking_grace),
                        on_change=lambda note: print(f"[{spec.name}] {note}", file=opts.out, flush=True))
        try:
            with Heartbeat(tracker, list(tracker.claimed)):
                summary.interrupted = _execute(spec, mode, tracker, where, opts, outbox)
                if not outbox.drain(tick=lambda note: print(f"[{spec.name}] trials done; {note}",
                                                            file=opts.out, flush=True)):
                    raise TrackingOutage(outage_message(outbox, where.tracking_uri))
        finally:
            outbox.close()
        summary.ran = mode.to_run
        tracker.refresh()
    rows = sweep_rows(where.tracking_uri, spec)
    stale = tracker.record_answer(spec, rows)  # the parent run shows the answer (sweep_answer.py)
    if stale:
        print(f"[{spec.name}] note: the parent run keeps its first value of param(s) {', '.join(stale)} (MLflow "
              f"params cannot change); its {SWEEP_ARTIFACT} artifact is the file as run now", file=opts.out, flush=True)
    if not tracker.others_active():  # else the run still at work closes the parent (and logs the cost)
        summary.tuning_cost = tracker.finish_parent()
    _fill_outcomes(summary, mode, tracker)
    print(summary.text(), file=opts.out, flush=True)
    print(format_rows(rows, limit=END_OF_RUN_ROWS), file=opts.out, flush=True)
    print(f"  browse: {browse_hint(where.tracking_uri)} (experiment {spec.experiment!r})", file=opts.out, flush=True)
    print_study_hint(where.study_url, opts.out)
    return summary


def _execute(spec, mode, tracker: SweepTracker, where: Locations, opts: RunOptions, outbox: Outbox) -> bool:
    """Run the Tune experiment; True when it was interrupted (Ctrl-C)."""
    metric, direction = mode.objective
    ctx = TrialContext(trials_root=where.trials_root(spec.experiment), spec=mode.worker_spec,
                       objective=metric, objective_mode=direction, known=mode.known,
                       fault_inject=os.environ.get(FAULT_ENV))
    with ray_session(opts.address, opts.num_cpus) as resources:
        has_gpu = resources.get("GPU", 0) > 0
        _check_fits(spec, resources, opts)
        _check_spread(spec, sum(1 for node in ray.nodes() if node.get("Alive")))
        if opts.address:  # several nodes: each must see the storage and run the same code
            check_nodes(where.storage, spec.name, opts.out)
        tracking = MlflowTrackingCallback(tracker, mode.lookup, n_params_of, known=set(mode.known), outbox=outbox)
        progress = ProgressPrinter(spec.name, mode.to_run, mode.lookup, metric, direction,
                                   best=best_so_far(tracker.child_runs(), metric, direction), out=opts.out,
                                   work=mode.work, outbox=outbox)
        tuner = _tuner(spec, mode, ctx, [tracking, progress, *study_links(mode, tracking)], where, opts, has_gpu,
                       OutageStopper(outbox, tracking))
        results = tuner.fit()
    # Ctrl-C makes Tune stop its trials and return early: fewer trials ended than planned. (A
    # search sweep taken over by another run stops early too, but that is said on its own.)
    return results.num_terminated + results.num_errors < mode.tune_trials and not tracker.sweep_lost()


def _tuner(spec, mode, ctx: TrialContext, callbacks: list, where: Locations, opts: RunOptions, has_gpu: bool,
           stopper=None):
    resources_of = mode.lookup.resources
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    lambda config: placement(resources_of(config), has_gpu))
    tune_config = tune.TuneConfig(
        num_samples=mode.num_samples, search_alg=mode.searcher,
        max_concurrent_trials=opts.max_concurrent or spec.concurrency,
        trial_dirname_creator=mode.trial_dirname, trial_name_creator=mode.trial_dirname,
        reuse_actors=True)  # a new worker per trial would re-import torch every time (seconds)
    run_config = tune.RunConfig(
        name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=where.tune_dir,
        failure_config=tune.FailureConfig(max_failures=spec.retries), callbacks=callbacks, verbose=0,
        stop=stopper)
    return tune.Tuner(trainable, param_space=mode.param_space, tune_config=tune_config, run_config=run_config)


def _check_spread(spec, nodes: int) -> None:
    """strict_spread gives each worker a node of its own: more workers than nodes would wait forever."""
    if spec.placement == "strict_spread" and spec.workers > nodes:
        raise UserError(f"{spec.source}: resources.placement=strict_spread puts each of the {spec.workers} workers of "
                        f"a trial on a node of its own, but the Ray cluster has {nodes} node(s); lower workers, use "
                        "placement: spread, or add nodes")


def _check_fits(spec, resources: dict, opts: RunOptions) -> None:
    """A trial asking for more CPUs than the cluster has would wait forever: say so now."""
    want = float(spec.resources.get("cpu", 1)) * spec.workers + (DRIVER_CPU if spec.workers > 1 else 0)
    have = float(resources.get("CPU", 0))
    if want > have:
        per = f" × workers={spec.workers}" if spec.workers > 1 else ""
        raise UserError(f"{spec.source}: resources.cpu={spec.resources.get('cpu', 1):g}{per} per trial, but the Ray "
                        f"cluster has only {have:g} CPUs; lower resources.cpu{' or workers' if per else ''} or use a "
                        "bigger cluster")
    gpu = spec.resources.get("gpu")
    if isinstance(gpu, (int, float)) and gpu > 0 and resources.get("GPU", 0) == 0:
        print(f"[{spec.name}] note: the sweep asks for {gpu:g} GPU per trial but the cluster has none; "
              "running on CPU", file=opts.out, flush=True)


def _fill_outcomes(summary: SweepSummary, mode, tracker: SweepTracker) -> None:
    """The state of the whole sweep after this run (not only what ran now)."""
    summary.outcomes.update(mode.outcomes(tracker))
    for run in tracker.child_runs():
        tags = run.data.tags
        if tags.get(TAG_OUTCOME) == OUTCOME_FAILED and tags.get(TAG_HASH) in summary.outcomes:
            error = (tags.get(TAG_ERROR) or "").strip().splitlines()
            label = mode.label(tags[TAG_HASH]) or tags.get(TAG_LABEL, run.info.run_id)
            summary.errors[label] = error[-1] if error else "unknown error"
