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
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, UserError
from .data import Batches, load_tokens
from .estimate import flops_per_token
from .fused_model import FusedGPT, runs
from .loop import (Report, Trainer, TrainResult, _print_progress, final_metrics, peak_flops, report_metrics,
                   start_runtime)
from .model import GPT
from .optim import Optimizers, lr_factor
from .pack_rules import MEMBER_FIELDS, PACK_FIELDS, check_pack, group_packs, pack_key, unfusable_reason
from .stats import multiplier_table
__all__ = ["FusedTrainer", "StackedAdamW", "train_fused", "MEMBER_FIELDS", "PACK_FIELDS", "check_pack",
           "group_packs", "pack_key", "unfusable_reason"]  # the pack rules live in pack_rules.py (no torch)


def _per_member(values: list[float], dims: int, device: torch.device) -> float | torch.Tensor:
    """A float when all members share it, else a (K, 1, ..., 1) fp32 tensor with `dims` dims
    (Python's double, rounded to fp32 as torch rounds a scalar argument)."""
    if all(v == values[0] for v in values):
        return values[0]
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, *([1] * (dims - 1)))


def member_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Each member's total 2-norm over `grads` (K,): the norm of its per-tensor norms, as
    torch.nn.utils.get_total_norm computes it for one model."""
    per_tensor = [torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads]
    return torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1)


class StackedAdamW:
    """AdamW on stacked parameters, each member with its own LR, WD, betas and eps.

    Not torch.optim.AdamW: its lr and weight_decay are one number per parameter group, and a
    stacked parameter needs one per member slice (K optimizers would be K times the ops this
    module exists to save). The update is torch's single-tensor AdamW (torch/optim/adam.py, the
    path it takes on CPU), op for op, with the per-member numbers as (K, 1, ...) tensors, so
    every slice gets the update torch would give it alone. The parameter groups, their LRs and
    WDs are those optim.param_groups builds for each member (one owner); they are only stacked.
    """

    def __init__(self, pairs: list[tuple[torch.nn.Parameter, list[torch.nn.Parameter]]],
                 members: list["Member"]):
        stacked_of = {id(p): stacked for stacked, ps in pairs for p in ps}
        per_member = [m.opt.groups for m in members]
        if len({tuple((g["name"], len(g["params"])) for g in groups) for groups in per_member}) != 1:
            raise ConfigError("members of a pack built different parameter groups")  # check_pack prevents it
        self.groups = [{"name": gs[0]["name"], "is_multiplier": gs[0]["is_multiplier"],
                        "params": [stacked_of[id(p)] for p in gs[0]["params"]],
                        "base_lr": [g["base_lr"] for g in gs], "weight_decay": [g["weight_decay"] for g in gs]}
                       for gs in zip(*per_member)]  # gs: one group, as each member has it
        cfgs = [m.cfg for m in members]
        self.beta1, self.beta2, self.eps = ([getattr(c, k) for c in cfgs] for k in ("beta1", "beta2", "eps"))
        self.beta1_runs, self.beta2_runs = runs(self.beta1), runs(self.beta2)
        self.grad_clip = [c.grad_clip if c.grad_clip > 0 else math.inf for c in cfgs]
        self.state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for g in self.groups for p in g["params"]}
        self.steps = 0  # AdamW steps taken by the active members (one count: they step together)

    def params(self, multipliers: bool) -> list[torch.nn.Parameter]:
        return [p for g in self.groups if g["is_multiplier"] == multipliers for p in g["params"]]

    @torch.no_grad()
    def clip(self, active: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member clip of every gradient but the multipliers' (docs/science.md §2), as
        clip_grad_norm_ does for one model; a frozen member's gradients are zeroed. Returns each
        member's gradient norm before clipping and its multipliers' gradient norm."""
        if not all(active):
            frozen = torch.tensor([not a for a in active], device=self.device)
            for p in self.state:
                p.grad.masked_fill_(frozen.view(-1, *([1] * (p.dim() - 1))), 0.0)
        clipped, mult = self.params(False), self.params(True)
        norm = member_norms([p.grad for p in clipped])
        max_norm = torch.tensor(self.grad_clip, dtype=norm.dtype, device=norm.device)
        # `max_norm / (norm + 1e-6)` with a float max_norm is reciprocal() * max_norm in torch
        coef = torch.clamp((norm + 1e-6).reciprocal() * max_norm, max=1.0)
        for p in clipped:
            p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
        mult_norm = member_norms([p.grad for p in mult]) if mult else torch.zeros_like(norm)
        return norm, mult_norm

    @property
    def device(self) -> torch.device:
        return next(iter(self.state)).device

    @torch.no_grad()
    def step(self, factors: list[float], active: list[bool]) -> None:
        """One AdamW step at LR `base_lr × factors[k]`; inactive members' LR is 0 (with their
        moments and gradients at zero, their parameters stay exactly as they are)."""
        self.steps += 1
        n, device = self.steps, self.device
        bc1 = [1 - b ** n for b in self.beta1]
        bc2_sqrt = [(1 - b ** n) ** 0.5 for b in self.beta2]
        for g in self.groups:
            lr = [base * f if a else 0.0 for base, f, a in zip(g["base_lr"], factors, active)]
            decay = [1 - lr_k * wd for lr_k, wd in zip(lr, g["weight_decay"])]
            neg_step = [-(lr_k / b) for lr_k, b in zip(lr, bc1)]
            shaped: dict[int, tuple] = {}  # p.dim() -> the per-member numbers, shaped to broadcast
            for p in g["params"]:
                exp_avg, exp_avg_sq = self.state[p]
                grad, dims = p.grad, p.dim()
                if dims not in shaped:
                    shaped[dims] = tuple(_per_member(v, dims, device) for v in (decay, neg_step, bc2_sqrt, self.eps))
                d, s, bc2, eps = shaped[dims]
                if not (isinstance(d, float) and d == 1.0):  # torch skips the decay when wd == 0 (× 1 is exact)
                    p.mul_(d)
                # lerp and addcmul with a tensor weight round differently from torch's scalar
                # calls: one scalar call per run of members with the same betas.
                for sl, b1 in self.beta1_runs:
                    exp_avg[sl].lerp_(grad[sl], 1 - b1)
                for sl, b2 in self.beta2_runs:
                    exp_avg_sq[sl].mul_(b2).addcmul_(grad[sl], grad[sl], value=1 - b2)
                denom = (exp_avg_sq.sqrt() / bc2).add_(eps)
                if isinstance(s, float):
                    p.addcdiv_(exp_avg, denom, value=s)
                else:  # addcdiv forms value·m before dividing: the same product, then the same division
                    p.addcdiv_(exp_avg * s, denom)

    def zero_grad(self) -> None:
        for p in self.state:
            p.grad = None

    @torch.no_grad()
    def forget(self, k: int) -> None:
        """Zero member k's moments (it diverged: NaN moments would defeat the masked update)."""
        for exp_avg, exp_avg_sq in self.state.values():
            exp_avg[k].zero_()
            exp_avg_sq[k].zero_()


@dataclass
class Member:
    """One member's own state. Its fields are those of loop.Trainer that the shared trainer
    code reads (report_metrics, final_metrics, Trainer.state_dict / load_state_dict): `model` and
    `opt` are a single GPT and its Optimizers, holding the member's slice of the pack whenever
    it is reported or checkpointed."""
    cfg: TrainConfig
    model: GPT
    opt: Optimizers
    batches: Batches
    flops_per_token: float
    peak: float | None
    step: int = 0
    initial_loss: float | None = None
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    status: str = "training"  # then "finished" | "diverged"
    diverged_at: int | None = None
    losses: list[float] = field(default_factory=list)  # train losses since the last report
    grad_norm: float = 0.0
    mult_norm: float = 0.0


class FusedTrainer:
    def __init__(self, cfgs: list[TrainConfig], tokens=None):
        check_pack(cfgs)
        cfg = cfgs[0]
        self.device = start_runtime(cfg)
        tokens = load_tokens(cfg) if tokens is None else tokens
        self.members: list[Member] = []
        for c in cfgs:
            batches = Batches(c, tokens)
            torch.manual_seed(c.seed)  # each member's init is the one it gets alone
            model = GPT(c).to(self.device)
            self.members.append(Member(c, model, Optimizers(model, c), batches, flops_per_token(c),
                                       peak_flops(c, self.device)))
        self.model = FusedGPT([m.model for m in self.members])
        self.pairs = self.model.pairs([m.model for m in self.members])
        self.opt = StackedAdamW(self.pairs, self.members)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.step = 0

    @property
    def active(self) -> list[bool]:
        return [m.status == "training" for m in self.members]

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> tuple[list[float], list[float], list[float]]:
        """One step of every member: (train losses, gradient norms, multiplier gradient norms)."""
        xs, ys = zip(*(m.batches.train(self.step) for m in self.members))
        x, y = (torch.stack(t).to(self.device, non_blocking=True) for t in (xs, ys))
        with self.autocast():
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
            with self.autocast():
                _, loss = self.model(x, y, record=records if i == 0 else None)
            for k, value in enumerate(loss.tolist()):
                losses[k].append(value)
        return [(sum(ls) / len(ls), rec or {}) for ls, rec in zip(losses, records)]

    @torch.no_grad()
    def unstack(self, k: int) -> None:
        """Copy member k's slice into its own GPT (for stats and checkpoints)."""
        for stacked, ps in self.pairs:
            ps[k].copy_(stacked[k])

    def freeze(self, k: int) -> None:
        self.opt.forget(k)

    def save(self, k: int, directory: str) -> str:
        """Member k's checkpoint in the single-model format (loop.train can resume it)."""
        m = self.members[k]
        self.unstack(k)
        adam = m.opt.all[0]
        for stacked, ps in self.pairs:
            if stacked in self.opt.state:
                exp_avg, exp_avg_sq = self.opt.state[stacked]
                adam.state[ps[k]] = {"step": torch.tensor(float(self.opt.steps)),
                                     "exp_avg": exp_avg[k].clone(), "exp_avg_sq": exp_avg_sq[k].clone()}
        try:
            return save_checkpoint(directory, m.step, Trainer.state_dict(m))  # the single-model format
        finally:
            adam.state.clear()

    @torch.no_grad()
    def load(self, paths: list[str | None]) -> None:
        """Resume every member from its checkpoint (all written at one step of one pack)."""
        if not any(paths):
            return
        if not all(paths):
            missing = [k for k, p in enumerate(paths) if not p]
            raise UserError(f"members {missing} have no checkpoint to resume from while the others do; "
                            "a pack resumes together (start the pack afresh, or leave those members out)")
        for m, path in zip(self.members, paths):
            Trainer.load_state_dict(m, load_checkpoint(path, m.cfg))
        steps = {m.step for m in self.members}
        if len(steps) != 1:
            raise UserError(f"the members' checkpoints are at different steps {[m.step for m in self.members]} "
                            "(paths: " + ", ".join(map(str, paths)) + "); a pack resumes from one step: leave out "
                            "members that already reported their final result")
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
        self.step = steps.pop()


def train_fused(cfgs: list[TrainConfig], reports: list[Report | None] | None = None,
                checkpoint_dirs: list[str | None] | None = None,
                resume_from: str | list[str | None] | None = None, progress: bool = False,
                on_end: Callable[[int, TrainResult], None] | None = None) -> list[TrainResult]:
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
    t = FusedTrainer(cfgs)
    if resume_from == "latest":
        t.load([latest_checkpoint(d) if d else None for d in dirs])
    elif resume_from:
        if isinstance(resume_from, str) or len(resume_from) != K:
            raise ValueError("resume_from: 'latest' or one checkpoint path (or None) per config")
        t.load(list(resume_from))
    members, cfg = t.members, cfgs[0]
    elapsed = max(m.elapsed for m in members)
    segment_start = time.perf_counter()
    interval_time = 0.0

    while t.step < cfg.steps and any(t.active):
        tic = time.perf_counter()
        losses, grad_norms, mult_norms = t.train_step()
        interval_time += time.perf_counter() - tic
        due: list[int] = []
        eval_point = t.step % cfg.eval_interval == 0 or t.step == cfg.steps
        for k, m in enumerate(members):
            if m.status != "training":
                continue
            m.step, m.grad_norm, m.mult_norm = t.step, grad_norms[k], mult_norms[k]
            m.losses.append(losses[k])
            if m.initial_loss is None:
                m.initial_loss = losses[k]
            if not math.isfinite(losses[k]) or losses[k] > m.cfg.divergence_factor * m.initial_loss:
                m.status, m.diverged_at = "diverged", t.step
                t.freeze(k)
                due.append(k)
            elif eval_point:
                due.append(k)
        if not due:
            continue
        now = elapsed + time.perf_counter() - segment_start
        evals = t.evaluate() if any(members[k].status == "training" for k in due) else None
        paths: dict[int, str | None] = {}
        for k in due:
            m = members[k]
            t.unstack(k)
            metrics = report_metrics(m, m.losses, interval_time, m.grad_norm, m.mult_norm, now,
                                     None if m.status == "diverged" else (lambda k=k: evals[k]))
            if m.status == "diverged" or t.step == cfg.steps:
                if m.status == "training":
                    m.status = "finished"
                metrics.update(final_metrics(m, metrics, m.status, m.diverged_at))
            m.history.append(metrics)
            m.losses = []
            paths[k] = None
            if dirs[k] and m.status != "diverged":
                m.elapsed = metrics["elapsed_s"]
                paths[k] = t.save(k, dirs[k])
        if any(paths.values()):
            elapsed, segment_start = now, time.perf_counter()
        for k in due:  # every checkpoint of this step is written before any report is sent
            if progress:
                print(f"[member {k}] ", end="", file=sys.stderr)
                _print_progress(members[k].history[-1], members[k].cfg)
            if reports[k]:
                reports[k](members[k].history[-1], paths[k])
            if on_end and members[k].status != "training":
                on_end(k, _result(members[k]))
        if eval_point:
            interval_time = 0.0

    return [_result(m) for m in members]


def _result(m: Member) -> TrainResult:
    return TrainResult(m.history[-1]["status"], m.history[-1], multiplier_table(m.model), m.history)
