"""Optimizers: build parameter groups carrying the parametrization's LR/WD multipliers, then
delegate to torch (AdamW; Muon for hidden matrices). Nothing here changes an update rule."""
from __future__ import annotations

import math

import torch

from .config import TrainConfig
from .model import GPT
from .parametrization import HIDDEN_ROLES, rules_for_config


def param_groups(model: GPT, cfg: TrainConfig) -> list[dict]:
    """One group per (role, kind of parameter). Each group holds `base_lr` (peak LR) and
    `is_multiplier`; the loop sets `lr` from the schedule each step."""
    rules = rules_for_config(cfg)
    groups: dict[str, dict] = {}

    def add(key: str, param: torch.nn.Parameter, role: str, lr_mult: float, wd: float, hidden: bool):
        if not param.requires_grad:
            return
        g = groups.setdefault(key, {"params": [], "name": key, "role": role, "hidden_matrix": hidden,
                                    "is_multiplier": role == "multiplier",
                                    "base_lr": cfg.lr * lr_mult, "base_wd": wd})
        g["params"].append(param)

    for layer in model.matrices().values():
        rule = rules[layer.role]
        add(layer.role, layer.weight, layer.role, rule.lr_mult, cfg.weight_decay * rule.wd_mult,
            layer.role in HIDDEN_ROLES)
        mult_rule = rules["multiplier"]
        for p in layer.multiplier_params().values():
            add("multiplier", p, "multiplier", mult_rule.lr_mult, cfg.multiplier_wd * mult_rule.wd_mult, False)
    norm_rule = rules["norm"]
    for norm in model.norms().values():
        add("norm", norm.weight, "norm", norm_rule.lr_mult, cfg.weight_decay * norm_rule.wd_mult, False)

    out = list(groups.values())
    for g in out:
        g["lr"] = g["base_lr"]
        # torch's AdamW decays by lr·wd ("decoupled"). "Independent" WD decays by wd·schedule,
        # not by the LR's magnitude: divide by the group's peak LR so lr_t·wd = schedule_t·λ.
        g["weight_decay"] = g["base_wd"] / g["base_lr"] if cfg.wd_mode == "independent" else g["base_wd"]
    return out


class Optimizers:
    """AdamW alone, or Muon (hidden matrices) + AdamW (everything else), behind one interface."""

    def __init__(self, model: GPT, cfg: TrainConfig):
        groups = param_groups(model, cfg)
        adam_kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        if cfg.optimizer == "muon":
            muon_groups = [g for g in groups if g["hidden_matrix"]]
            adam_groups = [g for g in groups if not g["hidden_matrix"]]
            # match_rms_adamw rescales Muon's orthogonalised update to AdamW's RMS, so the same
            # LR and µP's η/m rule carry over from AdamW.
            self.all = [torch.optim.AdamW(adam_groups, **adam_kw),
                        torch.optim.Muon(muon_groups, momentum=cfg.muon_momentum,
                                         adjust_lr_fn="match_rms_adamw")]
        else:
            self.all = [torch.optim.AdamW(groups, **adam_kw)]

    @property
    def groups(self) -> list[dict]:
        # Derived on each use: Optimizer.load_state_dict replaces the group dicts, and a
        # cached list would keep setting the LR on groups the optimizer no longer reads.
        return [g for opt in self.all for g in opt.param_groups]

    def set_lr(self, factor: float) -> None:
        for g in self.groups:
            g["lr"] = g["base_lr"] * factor

    def step(self) -> None:
        for opt in self.all:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.all]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.all, states):
            opt.load_state_dict(state)

    def clipped_params(self) -> list[torch.nn.Parameter]:
        """Everything but the learnable multipliers: docs/science.md §2 leaves their gradients
        out of the global clip (including them clipped too hard early and erased the gain)."""
        return [p for g in self.groups if not g["is_multiplier"] for p in g["params"]]

    def multiplier_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.groups if g["is_multiplier"] for p in g["params"]]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Schedule multiplier at `step` (0-based): linear warmup, then constant / WSD decay / cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":  # warmup-stable-decay: linear decay over the last decay_frac
        decay_steps = int(round(cfg.decay_frac * cfg.steps))
        decay_start = cfg.steps - decay_steps
        if decay_steps == 0 or step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / decay_steps
        return floor + (1.0 - floor) * max(0.0, 1.0 - progress)
    span = max(1, cfg.steps - cfg.warmup_steps)  # cosine from the end of warmup
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
