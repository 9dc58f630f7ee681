"""AdamW on K stacked models at once: the optimizer of a fused pack (trainer/fused.py)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .config import ConfigError
from .fused_model import runs

if TYPE_CHECKING:
    from .loop import RunState


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
    fusion exists to save). The update is torch's single-tensor AdamW (torch/optim/adam.py, the
    path it takes on CPU), op for op, with the per-member numbers as (K, 1, ...) tensors, so
    every slice gets the update torch would give it alone. The parameter groups, their LRs and
    WDs are those optim.param_groups builds for each member (one owner); they are only stacked.
    `members` need only `cfg` and `opt` (each member's own Optimizers): the loop's RunStates.
    """

    def __init__(self, pairs: list[tuple[torch.nn.Parameter, list[torch.nn.Parameter]]],
                 members: list["RunState"]):
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
