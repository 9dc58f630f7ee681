"""The two Tune function trainables: one scalelab Trial → `trainer.loop.train`, or a fused pack
→ `trainer.fused.train_fused`, on a Ray worker. A trial on several workers (resources.workers)
runs as a Ray Train V2 `TorchTrainer` inside its Tune trial: PyTorch DDP over gloo on CPUs,
NCCL on GPUs (trainer/distributed.py); rank 0 alone writes the folder and reports.

Each trial keeps its own folder (trial_folder.py). On (re)start its journal is replayed up to
the checkpoint it resumes from, so a report that was written but never reached MLflow (driver
killed, worker crashed) is sent again; the driver skips the steps it already has. A journal
that holds the final report needs no training at all.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray import tune

from .faults import FAULT_ENV, maybe_inject_fault
from .placement import hide_unassigned_gpus, recorded
from .progress import trial_progress_s
from .trial import GRID_TRIAL_KEY, OBJECTIVE_KEY, PACK_MEMBERS_KEY, REPORT_KEY, Trial, placement_strategy, workers_of
from .trial_folder import (Journal, checkpoints_of, open_folder, prune_checkpoints, resume_point, resume_points,
                           trial_folder, trial_lock)


@dataclass
class TrialContext:
    """What every trial of a sweep shares (shipped once through the object store)."""
    trials_root: str                       # absolute
    spec: Any = None                       # SweepSpec, needed to resolve sampled points (search)
    objective: str | None = None           # metric whose value Tune/Optuna optimise
    objective_mode: str = "min"
    known: dict = field(default_factory=dict)   # hash -> objective value of already-finished trials
    fault_inject: str | None = None
    progress_s: float = field(default_factory=trial_progress_s)  # read on the driver, shipped to workers


# --- the trainable -------------------------------------------------------------------------

def objective_value(metrics: dict, ctx: TrialContext) -> float:
    """The value Tune's searcher sees: the objective metric when this report has it, else the
    running val_loss; non-finite (diverged) values become the worst possible."""
    value = metrics.get(ctx.objective) if ctx.objective else None
    if value is None:
        value = metrics.get("val_loss", math.nan)
    value = float(value)
    if not math.isfinite(value):
        return math.inf if ctx.objective_mode == "min" else -math.inf
    return value


def payload(entry: dict, ctx: TrialContext, replay: bool, resumed_from: int | None = None) -> dict:
    """What one `tune.report` carries: the objective for Tune's searcher at the top level, the
    journal entry (trainer metrics, timestamp, multiplier table at the end) under `scalelab`."""
    return {OBJECTIVE_KEY: objective_value(entry["metrics"], ctx),
            REPORT_KEY: {**entry, "replay": replay, "resumed_from": resumed_from}}


def trial_from_config(config: dict, ctx: TrialContext):
    """Grid mode ships the resolved trial; search mode ships the sampled values."""
    if GRID_TRIAL_KEY in config:
        return Trial.from_payload(config[GRID_TRIAL_KEY])
    return ctx.spec.resolve(dict(config))


def set_threads(cfg, cpus: float) -> None:
    """Torch threads follow the trial's CPU allocation unless the config pins them. The config
    itself is left as is: its hash and checkpoints must not depend on the allocation."""
    import torch  # here, and the trainer below: the driver imports this module but never trains (torch: seconds to import)

    threads = cfg.threads or max(1, int(cpus))
    torch.set_num_threads(threads)


def run_trial(config: dict, ctx: TrialContext) -> None:
    if PACK_MEMBERS_KEY in config.get(GRID_TRIAL_KEY, {}):
        return run_pack(config, ctx)
    trial = trial_from_config(config, ctx)
    if trial.hash in ctx.known:  # a sampled point already trained: hand back its known result
        value = ctx.known[trial.hash]
        tune.report({OBJECTIVE_KEY: value if value is not None else objective_value({}, ctx),
                     REPORT_KEY: {"skipped": True, "hash": trial.hash}})
        return
    trial_dir = trial_folder(ctx.trials_root, trial.hash)
    with trial_lock([trial_dir]):
        _run_locked(trial, ctx, trial_dir)


def _run_locked(trial, ctx: TrialContext, trial_dir: Path) -> None:
    trial_dir, journal = open_folder(ctx.trials_root, trial.hash)
    entries = journal.read()
    if entries and entries[-1]["metrics"].get("final"):
        last_step = int(entries[-1]["metrics"]["step"])
        for entry in entries:  # finished before; only the driver missed it
            tune.report(payload(entry, ctx, replay=True, resumed_from=last_step))
        return
    resume_from, replay = resume_point(entries, trial_dir)
    journal.rewrite(replay)
    resumed_step = int(replay[-1]["metrics"]["step"]) if replay else None
    for entry in replay:
        tune.report(payload(entry, ctx, replay=True, resumed_from=resumed_step))
    _train(trial, ctx, trial_dir, journal, resume_from, resumed_step)


class TrialWriter:
    """Where one trial's reports go while it trains, alone or in a pack: the journal first, then
    Tune. The final report waits for the multiplier table (`finish`)."""

    def __init__(self, trial, trial_dir: Path, journal: Journal, ctx: TrialContext, resumed_step: int | None,
                 send: Callable[[dict], None] = tune.report):
        self.trial, self.trial_dir, self.journal, self.ctx = trial, trial_dir, journal, ctx
        self.resumed_step, self.send = resumed_step, send
        self.fault = ctx.fault_inject if ctx.fault_inject is not None else os.environ.get(FAULT_ENV)
        self.final: dict | None = None

    def _entry(self, metrics: dict, checkpoint_path: str | None) -> dict:
        return {"hash": self.trial.hash, "ts": int(time.time() * 1000), "metrics": metrics,
                "checkpoint": os.path.relpath(checkpoint_path, self.trial_dir) if checkpoint_path else None}

    def report(self, metrics: dict, checkpoint_path: str | None) -> None:
        entry = self._entry(metrics, checkpoint_path)
        if metrics.get("final"):
            maybe_inject_fault(self.fault, self.trial.hash, int(metrics["step"]), self.trial_dir)
            self.final = entry
            return
        self.journal.append(entry)
        maybe_inject_fault(self.fault, self.trial.hash, int(metrics["step"]), self.trial_dir)
        self.send(payload(entry, self.ctx, replay=False, resumed_from=self.resumed_step))

    def finish(self, result) -> None:
        """The final report with the trial's multiplier table: journaled, old checkpoints
        pruned, sent."""
        entry = self.final or self._entry({**result.metrics, "final": True}, None)
        entry["multipliers"] = result.multipliers
        self.journal.append(entry)
        prune_checkpoints(checkpoints_of(self.trial_dir), keep=entry.get("checkpoint"), trial_dir=self.trial_dir)
        self.send(payload(entry, self.ctx, replay=False, resumed_from=self.resumed_step))


def _train(trial, ctx: TrialContext, trial_dir: Path, journal: Journal, resume_from: str | None,
           resumed_step: int | None) -> None:
    if workers_of(trial.resources) > 1:
        return _train_data_parallel(trial, ctx, resume_from, resumed_step)
    _train_here(trial, ctx, trial_dir, TrialWriter(trial, trial_dir, journal, ctx, resumed_step), resume_from)


def _train_here(trial, ctx: TrialContext, trial_dir: Path, writer, resume_from: str | None,
                rank: int | None = None) -> None:
    """Train the trial in this process (alone, or as rank `rank` of its workers); placement.jsonl
    gets a line for each process that trains it."""
    from trainer.loop import train  # torch: on the worker only (see set_threads)

    hide_unassigned_gpus()
    set_threads(trial.config, trial.resources.get("cpu", 1))
    with recorded([trial_dir], rank=rank):
        result = train(trial.config, report=writer.report, checkpoint_dir=str(checkpoints_of(trial_dir)),
                       resume_from=resume_from, progress_s=ctx.progress_s, label=f"[{trial.label}] ")
        writer.finish(result)


# --- data-parallel trials (resources.workers > 1) -------------------------------------------

# What the Tune trial itself reserves when Ray Train's workers do the training: only a process
# that waits for them (Tune refuses an empty bundle). The workers reserve their own.
DRIVER_CPU = 0.01


def _train_data_parallel(trial, ctx: TrialContext, resume_from: str | None, resumed_step: int | None) -> None:
    """The trial as a Ray Train V2 TorchTrainer of resources.workers workers, each with the
    trial's cpu (and one GPU when it asks for GPUs and the cluster has them), laid over the
    nodes as resources.placement says (trial.PLACEMENTS). Rank 0's reports reach this Tune
    trial through TuneReportCallback. A worker that dies fails the run here, and Tune retries
    the trial from its folder like any other (journal replay, latest checkpoint)."""
    import ray
    from ray.train.v2.api.config import FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.torch.torch_trainer import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = trial.resources.get("gpu", 0) > 0 and ray.cluster_resources().get("GPU", 0) > 0
    per_worker = {"CPU": trial.resources.get("cpu", 1), **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _rank_main,
        train_loop_config={"trial": trial.to_payload(), "ctx": ctx, "resume_from": resume_from,
                           "resumed_step": resumed_step},
        scaling_config=ScalingConfig(num_workers=workers_of(trial.resources), use_gpu=use_gpu,
                                     resources_per_worker=per_worker,
                                     placement_strategy=placement_strategy(trial.resources)),
        run_config=RunConfig(name=f"train-{trial.hash}", storage_path=tune.get_context().get_trial_dir(),
                             callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=0)))
    trainer.fit()


class RankReports:
    """A rank other than 0: writes nothing, but reports (empty) at the same points as rank 0,
    since Ray Train takes a report from every rank together."""

    def __init__(self, send: Callable[[dict], None]):
        self.send = send

    def report(self, metrics: dict, checkpoint_path: str | None) -> None:
        if not metrics.get("final"):  # rank 0 holds its final report back for `finish`
            self.send({})

    def finish(self, result) -> None:
        self.send({})


def _rank_main(config: dict) -> None:
    """One Ray Train worker of a data-parallel trial (the process group is Ray Train's)."""
    import logging

    from ray.train.v2.api.train_fn_utils import get_context, report

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # else a line per report, holding all its metrics

    trial, ctx = Trial.from_payload(config["trial"]), config["ctx"]
    trial_dir, journal = open_folder(ctx.trials_root, trial.hash)
    rank = get_context().get_world_rank()
    if rank == 0:
        writer = TrialWriter(trial, trial_dir, journal, ctx, config["resumed_step"], send=report)
    else:
        writer = RankReports(report)
    _train_here(trial, ctx, trial_dir, writer, config["resume_from"], rank=rank)


# --- fused packs ----------------------------------------------------------------------------

@dataclass
class PackMember:
    """One member's own files, exactly as a lone trial keeps them (journal, checkpoints)."""
    trial: Any
    trial_dir: Path
    journal: Journal
    entries: list[dict]

    @classmethod
    def open(cls, trial, ctx: TrialContext) -> "PackMember":
        trial_dir, journal = open_folder(ctx.trials_root, trial.hash)
        return cls(trial, trial_dir, journal, journal.read())

    @property
    def ended(self) -> bool:
        return bool(self.entries) and bool(self.entries[-1]["metrics"].get("final"))


def run_pack(config: dict, ctx: TrialContext) -> None:
    """A fused pack (trainer/fused.py) on one Ray worker: members that ended before (their
    journal holds the final report) only replay it; the rest resume together from their
    newest common checkpoint and train as one stacked model. Each member's reports carry its
    own hash, so the driver files them under its own MLflow run."""
    trials = [Trial.from_payload(p) for p in config[GRID_TRIAL_KEY][PACK_MEMBERS_KEY]]
    with trial_lock([trial_folder(ctx.trials_root, t.hash) for t in trials]):
        _run_pack_locked(trials, ctx)


def _run_pack_locked(trials: list, ctx: TrialContext) -> None:
    members = [PackMember.open(t, ctx) for t in trials]
    live = []
    for m in members:
        if m.ended:  # only replayed (resumed_from None: the pack resumes from the others' step)
            for entry in m.entries:
                tune.report(payload(entry, ctx, replay=True))
        else:
            live.append(m)
    if not live:
        return
    paths, replays = _common_resume(live)
    resumed_step = int(replays[0][-1]["metrics"]["step"]) if replays[0] else None
    for m, replay in zip(live, replays):
        m.journal.rewrite(replay)
        for entry in replay:
            tune.report(payload(entry, ctx, replay=True, resumed_from=resumed_step))
    _train_pack(live, ctx, paths, resumed_step)


def _common_resume(live: list[PackMember]) -> tuple[list[str | None], list[list[dict]]]:
    """Each member's checkpoint and journal entries at the newest step all of them can resume
    from (a pack resumes from one step); none: the pack starts afresh."""
    found = [resume_points(m.entries, m.trial_dir) for m in live]
    common = set.intersection(*(set(f) for f in found))
    if not common:
        return [None] * len(live), [[] for _ in live]
    step = max(common)
    return [f[step][0] for f in found], [f[step][1] for f in found]


def _train_pack(live: list[PackMember], ctx: TrialContext, paths: list[str | None], resumed_step: int | None) -> None:
    from trainer.fused import train_fused  # torch: on the worker only (see set_threads)

    first = live[0].trial
    hide_unassigned_gpus()
    set_threads(first.config, first.resources.get("cpu", 1))
    writers = [TrialWriter(m.trial, m.trial_dir, m.journal, ctx, resumed_step) for m in live]
    with recorded([m.trial_dir for m in live]):
        train_fused([m.trial.config for m in live], reports=[w.report for w in writers],
                    checkpoint_dirs=[str(checkpoints_of(m.trial_dir)) for m in live],
                    resume_from=paths if any(paths) else None,
                    on_end=lambda k, result: writers[k].finish(result),  # a member's end, mid-pack or last
                    progress_s=ctx.progress_s, labels=[f"[{m.trial.label}] " for m in live])
