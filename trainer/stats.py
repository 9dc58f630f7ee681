"""Per-layer statistics reported at eval points: matrix RMS, effective RMS, multipliers, norms."""
from __future__ import annotations

import torch

from .metrics import EFF_RMS, MULT, NORM, WEIGHT_RMS
from .model import GPT


def _rms(t: torch.Tensor) -> float:
    return t.detach().float().pow(2).mean().sqrt().item()


def _summary(t: torch.Tensor) -> dict[str, float]:
    t = t.detach().float()
    return {"mean": t.mean().item(), "rms": t.pow(2).mean().sqrt().item(),
            "min": t.min().item(), "max": t.max().item()}


@torch.no_grad()
def layer_stats(model: GPT) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, layer in model.matrices().items():
        out[f"{WEIGHT_RMS}{name}"] = _rms(layer.weight)
        out[f"{EFF_RMS}{name}"] = _rms(layer.effective_weight())
        for kind, p in layer.multiplier_params().items():
            if kind == "scalar":
                out[f"{MULT}{name}/scalar"] = p.item()
            else:
                out.update({f"{MULT}{name}/{kind}_{k}": v for k, v in _summary(p).items()})
    for name, norm in model.norms().items():
        out[f"{NORM}{name}/mean"] = norm.weight.detach().float().mean().item()
    return out


@torch.no_grad()
def multiplier_table(model: GPT) -> list[dict]:
    """One row per learnable multiplier tensor: layer, role, block, kind, mean, rms, min, max, size."""
    rows = []
    for name, layer in model.matrices().items():
        block = int(name.split(".")[1]) if "." in name else -1
        for kind, p in layer.multiplier_params().items():
            rows.append({"layer": name, "role": layer.role, "block": block, "kind": kind,
                         **_summary(p), "size": p.numel()})
    return rows
