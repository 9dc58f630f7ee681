"""Horizontal fusion (HFTA, Wang et al. 2021): train K configs of one shape as one stacked model.

A sweep's small trials (widths 64-512) spend much of a step in per-op launch and Python
overhead. K members that share every shape but differ in any number (LR, WD, seed and data
order, scheme, forward multipliers, init stds, LR/WD multipliers, clip, schedule) run as one
FusedGPT: one batched matmul per layer instead of K, one optimizer pass over stacked tensors.

    results = train_fused(cfgs, reports=[fn0, fn1, ...], checkpoint_dirs=[d0, d1, ...])

Each member behaves as `trainer.loop.train` would alone: the same reports (same keys, same
`report(metrics, checkpoint_path)` callback), the same losses (on CPU in fp32, equal to the
last bit in the tests), its own gradient clip, its own divergence (a diverged member is frozen
and reported, the others go on), its own checkpoint in the single-model format (so a member's
checkpoint also resumes alone with `train`). `pack_key`/`group_packs` say which configs can
share a pack. Muon is not fused (its orthogonalisation is per matrix; train it alone).

The loop is loop.run's, as for one model (divergence, eval cadence, reports, checkpoints, time,
precision); this module only steps the stack (FusedTrainer, the pack's Engine) and hands each
member's slice to its loop.RunState when it is reported or checkpointed.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from .checkpoint import LATEST
from .config import TrainConfig
from .data import Batches, load_tokens
from .fused_model import FusedGPT
from .loop import TRAINING, Report, RunState, TrainResult, autocast, run, start_runtime
from .optim import lr_factor
from .pack_rules import MEMBER_FIELDS, PACK_FIELDS, check_pack, group_packs, pack_key, unfusable_reason
from .stacked_adamw import StackedAdamW

__all__ = ["FusedTrainer", "StackedAdamW", "train_fused", "MEMBER_FIELDS", "PACK_FIELDS", "check_pack",
           "group_packs", "pack_key", "unfusable_reason"]  # the pack rules live in pack_rules.py (no torch)


class FusedTrainer:
    """K models of one shape as one FusedGPT with one StackedAdamW: the engine of a pack
    (loop.Engine). Each member's RunState keeps its own GPT and Optimizers, its init (built
    from its own seed) and its data order; the stack is trained, the members only receive it."""

    def __init__(self, cfgs: list[TrainConfig], tokens=None):
        check_pack(cfgs)
        cfg = cfgs[0]
        self.device = start_runtime(cfg)
        tokens = load_tokens(cfg) if tokens is None else tokens
        self.members = [RunState.build(c, Batches(c, tokens), self.device, label=f"[member {k}] ")
                        for k, c in enumerate(cfgs)]
        self.model = FusedGPT([m.model for m in self.members])
        self.pairs = self.model.pairs([m.model for m in self.members])
        self.opt = StackedAdamW(self.pairs, self.members)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.step = 0

    @property
    def active(self) -> list[bool]:
        return [m.status == TRAINING for m in self.members]

    def train_step(self) -> tuple[list[float], list[float], list[float]]:
        """One step of every member: (train losses, gradient norms, multiplier gradient norms)."""
        xs, ys = zip(*(m.batches.train(self.step) for m in self.members))
        x, y = (torch.stack(t).to(self.device, non_blocking=True) for t in (xs, ys))
        with autocast(self.device):
            _, losses = self.forward(x, y)
        losses.sum().backward()  # each member's loss gets gradient 1, as its own backward() gives
        active = self.active
        grad_norm, mult_norm = self.opt.clip(active)
        self.opt.step([lr_factor(self.step, m.cfg) for m in self.members], active)
        self.opt.zero_grad()
        self.step += 1
        return losses.tolist(), grad_norm.tolist(), mult_norm.tolist()

    @torch.no_grad()
    def evaluate(self) -> list[tuple[float, dict[str, float]]]:
        """Each member's (validation loss, activations), as Trainer.evaluate (one val set)."""
        K = len(self.members)
        records = [{} if m.cfg.record_activations else None for m in self.members]
        losses: list[list[float]] = [[] for _ in range(K)]
        for i in range(self.members[0].cfg.eval_batches):
            x, y = (t.to(self.device).expand(K, *t.shape) for t in self.members[0].batches.val(i))
            with autocast(self.device):
                _, loss = self.model(x, y, record=records if i == 0 else None)
            for k, value in enumerate(loss.tolist()):
                losses[k].append(value)
        return [(sum(ls) / len(ls), rec or {}) for ls, rec in zip(losses, records)]

    # the Engine
    train_members = train_step
    evaluate_members = evaluate

    @torch.no_grad()
    def sync(self, k: int) -> None:
        """Copy member k's slice into its own GPT (for stats and checkpoints)."""
        for stacked, ps in self.pairs:
            ps[k].copy_(stacked[k])

    def freeze(self, k: int) -> None:
        self.opt.forget(k)

    @contextlib.contextmanager
    def optimizer_state(self, k: int) -> Iterator[None]:
        """Member k's AdamW moments in its own Optimizers while the block runs, as a lone
        run's AdamW holds them (so its checkpoint is in the single-model format)."""
        adam = self.members[k].opt.all[0]
        for stacked, ps in self.pairs:
            if stacked in self.opt.state:
                exp_avg, exp_avg_sq = self.opt.state[stacked]
                adam.state[ps[k]] = {"step": torch.tensor(float(self.opt.steps)),
                                     "exp_avg": exp_avg[k].clone(), "exp_avg_sq": exp_avg_sq[k].clone()}
        try:
            yield
        finally:
            adam.state.clear()

    @torch.no_grad()
    def resumed(self) -> None:
        """Stack the members' loaded weights and AdamW moments (all at one step)."""
        for k, m in enumerate(self.members):
            adam = m.opt.all[0]
            for stacked, ps in self.pairs:
                stacked[k].copy_(ps[k])
                if stacked in self.opt.state:
                    state = adam.state[ps[k]]
                    self.opt.state[stacked][0][k].copy_(state["exp_avg"])
                    self.opt.state[stacked][1][k].copy_(state["exp_avg_sq"])
                    self.opt.steps = int(state["step"].item())
            adam.state.clear()
        self.step = self.members[0].step


def train_fused(cfgs: list[TrainConfig], reports: list[Report | None] | None = None,
                checkpoint_dirs: list[str | None] | None = None,
                resume_from: str | list[str | None] | None = None, progress: bool = False,
                on_end: Callable[[int, TrainResult], None] | None = None, progress_s: float = 0.0,
                labels: list[str] | None = None) -> list[TrainResult]:
    """Train the configs as one fused pack (check_pack says whether they can be); one
    TrainResult per config, in order. `reports[k](metrics, checkpoint_path)` gets member k's
    reports exactly as `train(cfgs[k], report=...)` would; `checkpoint_dirs[k]` is where member
    k's checkpoints go; `resume_from` is "latest" (each member's latest checkpoint in its
    directory) or one checkpoint path per member. Members that already reported a final result
    are left out of a resumed pack by the caller. `on_end(k, result)` is called once member k
    has ended (diverged mid-pack, or finished), right after its final report: a caller can
    record a member's result while the others still train."""
    K = len(cfgs)
    reports = list(reports) if reports is not None else [None] * K
    dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * K
    if len(reports) != K or len(dirs) != K:
        raise ValueError(f"{K} configs need {K} reports and checkpoint dirs (got {len(reports)} and {len(dirs)})")
    if resume_from and resume_from != LATEST and (isinstance(resume_from, str) or len(resume_from) != K):
        raise ValueError("resume_from: 'latest' or one checkpoint path (or None) per config")
    engine = FusedTrainer(cfgs)
    for member, label in zip(engine.members, labels or []):  # progress lines (see loop.run)
        member.label = label
    return run(engine, reports, dirs, resume_from, progress, on_end, progress_s)
