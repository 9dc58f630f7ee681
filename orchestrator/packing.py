"""Which grid trials of a `scalelab run` train together as one fused pack (trainer/fused.py).

`fuse` in a sweep file, or `--fuse` of `run` and `plan` (the flag wins; values in fuse.py):

    off    (default) every trial alone: one Ray trial each
    N      trials that share a shape (trainer.fused.pack_key) go in packs of at most N
    auto   GPU trials in packs sized from their estimated memory (at most 16); CPU trials
           alone: on CPU a pack measured no faster than one trial at a time except for
           small steps, and the fused quickstart took longer (docs/performance.md, "Fused packs")

`off` is the default because fused training has not yet been run on a GPU by this project.

A pack is only how trials share a Ray trial and a step loop: each member keeps its own hash,
MLflow run, outcome, journal and checkpoint directory, so dedupe, claims, resume and the
analysis see members, never packs. Muon trials, trials on several workers and search samples
always run alone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from trainer.estimate import machine_memory_bytes
from trainer.pack_rules import group_packs, unfusable_reason

from .fuse import DATA_PARALLEL_ALONE, fusion_asked
from .trial import PACK_MEMBERS_KEY, gpu_fraction, trial_cost, workers_of

AUTO_MAX_MEMBERS = 16     # HFTA's gains flatten out well before this; memory decides below it
MEMORY_USE = 0.9          # share of the device's memory a pack may plan for (allocator slack)
@dataclass(frozen=True)
class Pack:
    """Trials that run as one Ray trial: a fused pack, or one trial alone (K = 1)."""
    members: tuple                 # orchestrator.trial.Trial, in sweep order
    resources: dict                # what the Ray trial asks for: {"cpu", "gpu"}
    note: str = ""                 # why these trials run alone, when fusion was asked for

    @property
    def fused(self) -> bool:
        return len(self.members) > 1

    @property
    def hash(self) -> str:
        """A lone trial's own hash; a pack's id (only names its Ray trial folder)."""
        if not self.fused:
            return self.members[0].hash
        return "pack-" + hashlib.sha256("".join(sorted(t.hash for t in self.members)).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        if not self.fused:
            return self.members[0].label
        return f"pack of {len(self.members)} ({self.members[0].label}, …)"

    @property
    def memory_bytes(self) -> float:
        """Stacked weights, Adam state and activations grow with K; the data is shared."""
        return sum(trial_cost(t)["memory_bytes"] for t in self.members)

    def to_payload(self) -> dict:
        """Tune's config: a lone trial's payload as before; a pack lists its members."""
        if not self.fused:
            return self.members[0].to_payload()
        return {"hash": self.hash, "label": self.label, "resources": dict(self.resources),
                PACK_MEMBERS_KEY: [t.to_payload() for t in self.members]}


def make_packs(trials: list, fuse, gpu_auto: bool, gpu_memory_gb: float) -> list[Pack]:
    """The pending trials as packs (or alone), longest first."""
    if fuse == "off" or fuse == 1 or not trials:
        return longest_first([Pack((t,), dict(t.resources)) for t in trials])
    alone = [Pack((t,), dict(t.resources), note=DATA_PARALLEL_ALONE) for t in trials if workers_of(t.resources) > 1]
    if alone:
        return longest_first(alone + make_packs([t for t in trials if workers_of(t.resources) == 1], fuse, gpu_auto,
                                                gpu_memory_gb))
    on_gpu = [t.resources["gpu"] > 0 for t in trials]
    packs: list[Pack] = []
    for device_gpu in (True, False):
        chosen = [t for t, g in zip(trials, on_gpu) if g == device_gpu]
        if not chosen:
            continue
        if fuse == "auto" and not device_gpu:
            packs += [Pack((t,), dict(t.resources), note="fuse: auto leaves CPU trials alone") for t in chosen]
            continue
        packs += _fused(chosen, fuse, device_gpu, gpu_auto, gpu_memory_gb)
    return longest_first(packs)


def longest_first(packs: list[Pack]) -> list[Pack]:
    """Longest estimated compute first, ties in sweep order: a long trial or pack started last
    runs on while the other workers have nothing left (longest-processing-time-first)."""
    return sorted(packs, key=lambda p: -sum(trial_cost(t)["seconds"] for t in p.members))


def _fused(trials: list, fuse, on_gpu: bool, gpu_auto: bool, gpu_memory_gb: float) -> list[Pack]:
    limit = AUTO_MAX_MEMBERS if fuse == "auto" else int(fuse)
    budget = gpu_memory_gb * 2 ** 30 if on_gpu else machine_memory_bytes()
    out = []
    for group in group_packs([t.config for t in trials], max_members=limit):
        members = [trials[i] for i in group]
        reason = unfusable_reason(members[0].config)
        if reason:
            out.append(Pack((members[0],), dict(members[0].resources), note=reason.split(";")[0]))
            continue
        per_member = trial_cost(members[0])["memory_bytes"]  # one shape: one estimate
        fit = max(1, int(MEMORY_USE * budget // per_member)) if budget else len(members)
        for start in range(0, len(members), fit):
            chunk = tuple(members[start:start + fit])
            out.append(Pack(chunk, _resources(chunk, per_member, on_gpu, gpu_auto, gpu_memory_gb)))
    return out


def _resources(members: tuple, per_member: float, on_gpu: bool, gpu_auto: bool, gpu_memory_gb: float) -> dict:
    """A pack asks for one member's CPUs (the pack's step loop is one process) and, under
    `gpu: auto`, the GPU share its K members' memory needs (else one member's setting)."""
    resources = dict(members[0].resources)
    if on_gpu and gpu_auto:
        resources["gpu"] = gpu_fraction(per_member * len(members), gpu_memory_gb)
    return resources


def trials_of(unit) -> list:
    """The trials behind one Ray trial's unit (a Pack, or a lone Trial / sampled point)."""
    return list(unit.members) if isinstance(unit, Pack) else [unit]


def pack_summary(packs: list[Pack], fuse) -> str:
    """One line on how the trials run, when any are fused or fusion was asked for."""
    fused = [p for p in packs if p.fused]
    alone = len(packs) - len(fused)
    if not fused and not fusion_asked(fuse):
        return ""
    sizes = ", ".join(str(len(p.members)) for p in fused) or "none"
    why = sorted({p.note for p in packs if not p.fused and p.note})
    return (f"fuse: {fuse} → {sum(len(p.members) for p in fused)} trial(s) in {len(fused)} fused pack(s) "
            f"(K = {sizes}), {alone} alone" + (f" ({'; '.join(why)})" if why else ""))
