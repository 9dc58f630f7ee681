"""The Tune function trainable: one scalelab Trial → `trainer.loop.train` on a Ray worker.

Each trial keeps its own directory under the sweep storage, keyed by trial hash, so resuming
never depends on Tune's experiment state:

    <trials_root>/<hash>/checkpoints/step_*   the trainer's checkpoints
    <trials_root>/<hash>/reports.jsonl        every report, stamped, written before it is sent

On (re)start the journal is replayed up to the checkpoint we resume from, so a report that was
written but never reached MLflow (driver killed, worker crashed) is sent again; the driver
skips the steps it already has. A journal that holds the final report needs no training at all.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .trial import GRID_TRIAL_KEY, OBJECTIVE_KEY, PACK_MEMBERS_KEY, REPORT_KEY, Trial

FAULT_ENV = "SCALELAB_FAULT_INJECT"


@dataclass
class TrialContext:
    """What every trial of a sweep shares (shipped once through the object store)."""
    trials_root: str                       # absolute
    spec: Any = None                       # SweepSpec, needed to resolve sampled points (search)
    objective: str | None = None           # metric whose value Tune/Optuna optimise
    objective_mode: str = "min"
    known: dict = field(default_factory=dict)   # hash -> objective value of already-finished trials
    fault_inject: str | None = None


class InjectedFault(RuntimeError):
    """Raised on purpose by SCALELAB_FAULT_INJECT (tests of retries and resume)."""


# --- the journal ---------------------------------------------------------------------------

class Journal:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: it was never sent
                    break
        return entries

    def rewrite(self, entries: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(json.dumps(entry) + "\n")
        os.replace(tmp, self.path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def resume_points(entries: list[dict], trial_dir: Path) -> dict[int, tuple[str, list[dict]]]:
    """step -> (journaled checkpoint still on disk, the entries up to it: those are replayed;
    later ones will be produced again by training)."""
    found = {}
    for i, entry in enumerate(entries):
        ckpt = entry.get("checkpoint")
        if ckpt and (trial_dir / ckpt / "state.pt").is_file():
            found[int(entry["metrics"]["step"])] = (str(trial_dir / ckpt), entries[:i + 1])
    return found


def resume_point(entries: list[dict], trial_dir: Path) -> tuple[str | None, list[dict]]:
    """The newest journaled checkpoint still on disk, and the entries up to it."""
    found = resume_points(entries, trial_dir)
    return found[max(found)] if found else (None, [])


# --- one writer per trial folder ------------------------------------------------------------

LOCK_FILE = "writer.lock"
LOCK_NOTE_S = 30.0   # how often a waiting worker says it is still waiting


@contextmanager
def trial_lock(trial_dirs: list[Path], note=print):
    """Hold an exclusive lock on each trial folder (sorted order: two packs sharing members
    cannot deadlock) while this worker reads, trains and writes it. Another process that holds
    one — a `scalelab run` whose claim lapsed while MLflow was unreachable, still training —
    is waited for: once it ends, the journal holds what it wrote and this worker resumes or
    replays from there, so a trial folder never has two writers. The claim in MLflow (which
    invocation runs a trial) is checked before; this lock is the storage's own guarantee
    (flock: local disks, and NFS whose clients map it to byte-range locks)."""
    import fcntl

    held = []
    try:
        for trial_dir in sorted(trial_dirs):
            trial_dir.mkdir(parents=True, exist_ok=True)
            fh = open(trial_dir / LOCK_FILE, "a+")
            held.append(fh)
            waited = 0.0
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if waited % LOCK_NOTE_S == 0:
                        note(f"trial {trial_dir.name}: another process is writing its folder; waiting for it "
                             "to end (its results are then replayed, not trained again)")
                    time.sleep(1.0)
                    waited += 1.0
        yield
    finally:
        for fh in held:
            fh.close()  # closing releases the lock


# --- fault injection -----------------------------------------------------------------------

def parse_faults(text: str | None, strict: bool = False) -> list[tuple[str, int, float]]:
    """`prefix:step[:times]` items, comma separated; times defaults to 1, 'always' = forever.
    A malformed item raises ValueError when `strict` (`check_faults`, at the start of `scalelab
    run`, turns it into a one-line UserError), else it is skipped: a worker never fails on it."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3) or not parts[0]:
                raise ValueError
            step = int(parts[1])
            times = math.inf if len(parts) == 3 and parts[2] == "always" else int(parts[2]) if len(parts) == 3 else 1
            if step < 0 or times < 1:
                raise ValueError
        except ValueError:
            if not strict:
                continue
            raise ValueError(f"{FAULT_ENV}: bad item {item!r}; expected HASH_PREFIX:STEP[:TIMES|always], "
                             "comma separated (e.g. 3fa2:10 or 3fa2:10:always)") from None
        out.append((parts[0], step, times))
    return out


def check_faults(text: str | None) -> None:
    """Refuse a malformed SCALELAB_FAULT_INJECT up front (a UserError: exit 2, one line)."""
    from trainer.config import UserError

    try:
        parse_faults(text, strict=True)
    except ValueError as err:
        raise UserError(str(err)) from None


def maybe_inject_fault(spec: str | None, trial_hash: str, step: int, trial_dir: Path) -> None:
    """Raise at the first report at or past the step (a resumed run starts past it), as many
    times as asked; the count lives in the trial directory so retries see it."""
    for prefix, at_step, times in parse_faults(spec):
        if trial_hash.startswith(prefix) and step >= at_step:
            marker = trial_dir / f"fault-{at_step}.count"
            count = int(marker.read_text()) if marker.is_file() else 0
            if count < times:
                marker.write_text(str(count + 1))
                raise InjectedFault(f"injected fault at step {step} of trial {trial_hash} "
                                    f"({FAULT_ENV}, occurrence {count + 1})")


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
    import torch

    threads = cfg.threads or max(1, int(cpus))
    torch.set_num_threads(threads)


def run_trial(config: dict, ctx: TrialContext) -> None:
    from ray import tune

    if PACK_MEMBERS_KEY in config.get(GRID_TRIAL_KEY, {}):
        return run_pack(config, ctx)
    trial = trial_from_config(config, ctx)
    if trial.hash in ctx.known:  # a sampled point already trained: hand back its known result
        value = ctx.known[trial.hash]
        tune.report({OBJECTIVE_KEY: value if value is not None else objective_value({}, ctx),
                     REPORT_KEY: {"skipped": True, "hash": trial.hash}})
        return
    trial_dir = Path(ctx.trials_root) / trial.hash
    with trial_lock([trial_dir]):
        _run_locked(trial, ctx, trial_dir)


def _run_locked(trial, ctx: TrialContext, trial_dir: Path) -> None:
    from ray import tune

    (trial_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    journal = Journal(trial_dir / "reports.jsonl")
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

    def __init__(self, trial, trial_dir: Path, journal: Journal, ctx: TrialContext, resumed_step: int | None):
        self.trial, self.trial_dir, self.journal, self.ctx = trial, trial_dir, journal, ctx
        self.resumed_step = resumed_step
        self.fault = ctx.fault_inject if ctx.fault_inject is not None else os.environ.get(FAULT_ENV)
        self.final: dict | None = None

    def _entry(self, metrics: dict, checkpoint_path: str | None) -> dict:
        return {"hash": self.trial.hash, "ts": int(time.time() * 1000), "metrics": metrics,
                "checkpoint": os.path.relpath(checkpoint_path, self.trial_dir) if checkpoint_path else None}

    def report(self, metrics: dict, checkpoint_path: str | None) -> None:
        from ray import tune

        entry = self._entry(metrics, checkpoint_path)
        if metrics.get("final"):
            maybe_inject_fault(self.fault, self.trial.hash, int(metrics["step"]), self.trial_dir)
            self.final = entry
            return
        self.journal.append(entry)
        maybe_inject_fault(self.fault, self.trial.hash, int(metrics["step"]), self.trial_dir)
        tune.report(payload(entry, self.ctx, replay=False, resumed_from=self.resumed_step))

    def finish(self, result) -> None:
        """The final report with the trial's multiplier table: journaled, old checkpoints
        pruned, sent."""
        from ray import tune

        entry = self.final or self._entry({**result.metrics, "final": True}, None)
        entry["multipliers"] = result.multipliers
        self.journal.append(entry)
        prune_checkpoints(self.trial_dir / "checkpoints", keep=entry.get("checkpoint"), trial_dir=self.trial_dir)
        tune.report(payload(entry, self.ctx, replay=False, resumed_from=self.resumed_step))


def _train(trial, ctx: TrialContext, trial_dir: Path, journal: Journal, resume_from: str | None,
           resumed_step: int | None) -> None:
    from trainer.loop import train

    set_threads(trial.config, trial.resources.get("cpu", 1))
    writer = TrialWriter(trial, trial_dir, journal, ctx, resumed_step)
    result = train(trial.config, report=writer.report, checkpoint_dir=str(trial_dir / "checkpoints"),
                   resume_from=resume_from, progress=False)
    writer.finish(result)


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
        trial_dir = Path(ctx.trials_root) / trial.hash
        (trial_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        journal = Journal(trial_dir / "reports.jsonl")
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
    with trial_lock([Path(ctx.trials_root) / t.hash for t in trials]):
        _run_pack_locked(trials, ctx)


def _run_pack_locked(trials: list, ctx: TrialContext) -> None:
    from ray import tune

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
    from trainer.fused import train_fused

    first = live[0].trial
    set_threads(first.config, first.resources.get("cpu", 1))
    writers = [TrialWriter(m.trial, m.trial_dir, m.journal, ctx, resumed_step) for m in live]
    train_fused([m.trial.config for m in live], reports=[w.report for w in writers],
                checkpoint_dirs=[str(m.trial_dir / "checkpoints") for m in live],
                resume_from=paths if any(paths) else None,
                on_end=lambda k, result: writers[k].finish(result))  # a member's end, mid-pack or last


def prune_checkpoints(directory: Path, keep: str | None, trial_dir: Path) -> None:
    """After the final report only the final checkpoint is worth its disk space."""
    for path in directory.glob("step_*"):
        if keep is None or path != trial_dir / keep:
            shutil.rmtree(path, ignore_errors=True)
