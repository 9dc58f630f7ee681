"""Equilibrium norms (REFERENCE.md §1, §5): in a sweep of S = sqrt(η/λ) at fixed sqrt(η·λ),
the matrix RMS should follow S (log-log slope 1) while, with learnable multipliers, the
effective scale (multiplier × matrix, eff_rms/...) stays flat (slope 0) and so does the loss.

S is computed from the base `lr` and `weight_decay` columns (per-group LR/WD multipliers are
the same for every run of a sweep at one width, so they only shift the intercept). Runs:
finished grid runs; a sweep qualifies when it has ≥ 3 values of S at one width and one
sqrt(η·λ) (rounded to 1%).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.config import UserError

from . import frames
from .layers import role_values
from .stats import loglog_fit

MIN_S_VALUES = 3
PREDICTED = {"weight_rms": 1.0, "eff_rms": 0.0}


def fit_norms(trials: pd.DataFrame, size: str = "d_model", loss: str = "final_val_loss",
              level: float = 0.95) -> dict:
    frames.require_columns(trials, ["lr", "weight_decay", size, "parametrization", "outcome"], "equilibrium norms")
    if not any(c.startswith("weight_rms/") for c in trials.columns):
        raise UserError("equilibrium norms need weight_rms/<layer> metrics; the trials table has none")
    runs = frames.grid_runs(trials)
    runs = runs[runs["outcome"].eq("finished")].copy()
    lr, wd = (pd.to_numeric(runs[c], errors="coerce").to_numpy(dtype=float) for c in ("lr", "weight_decay"))
    with np.errstate(divide="ignore", invalid="ignore"):
        runs["_S"] = np.sqrt(lr / wd)
        runs["_P"] = np.round(np.log(np.sqrt(lr * wd)) / np.log(1.01))  # sqrt(η·λ) to 1%
    runs = runs[np.isfinite(runs["_S"]) & np.isfinite(runs["_P"])]
    keys = frames.group_keys(runs) + [size, "_P"]
    sweeps = [_fit_sweep(group, sub, size, loss, level) for group, sub in frames.iter_groups(runs, keys)
              if sub["_S"].round(12).nunique() >= MIN_S_VALUES]
    if not sweeps:
        raise UserError(f"equilibrium norms need a sqrt(η/λ) sweep: ≥ {MIN_S_VALUES} values of sqrt(lr/weight_decay) "
                        f"at one width and one sqrt(lr·weight_decay) (REFERENCE.md §5); these runs have none")
    return {"analysis": "norms", "x": "sqrt(lr / weight_decay)", "predicted_slopes": PREDICTED,
            "selection": "finished grid runs; groups of one width and one sqrt(lr·weight_decay)",
            "aggregation": "geometric mean over blocks", "ci_level": level,
            "treatment": {"diverged": "excluded (no equilibrium)", "failed": "excluded"}, "sweeps": sweeps, "warnings": []}


def _fit_sweep(group: dict, runs: pd.DataFrame, size: str, loss: str, level: float) -> dict:
    S = runs["_S"].to_numpy()
    product = float(np.sqrt((runs["lr"] * runs["weight_decay"]).median()))
    clean = {k: v for k, v in group.items() if k not in ("_P", size)}
    out = {"group": clean, "label": frames.group_label(clean), size: group[size], "sqrt_lr_wd": product,
           "S_values": sorted(set(np.round(S, 12).tolist())), "n_runs": len(runs), "lrm": frames.is_lrm(group["parametrization"]),
           "series": [], "loss": _loss_profile(S, runs, loss)}
    for kind in ("weight_rms", "eff_rms"):
        if kind == "eff_rms" and not out["lrm"]:
            continue  # without multipliers eff_rms is weight_rms
        for role, values in role_values(runs, kind).items():
            fit = loglog_fit(S, values, level)
            if fit["n_runs"] == 0:
                continue
            out["series"].append({"kind": kind, "role": role, **fit, "predicted": PREDICTED[kind],
                                  "points": _points(S, values)})
    return out


def _loss_profile(S: np.ndarray, runs: pd.DataFrame, loss: str) -> dict:
    """Mean loss per S, and its spread (max − min of the means): flat with multipliers."""
    if loss not in runs.columns:
        return {"points": [], "spread": None}
    values = pd.to_numeric(runs[loss], errors="coerce").to_numpy(dtype=float)
    points = [{"S": float(s), "loss_mean": float(np.nanmean(values[S == s])), "n": int(np.isfinite(values[S == s]).sum())}
              for s in np.unique(S) if np.isfinite(values[S == s]).any()]
    means = [p["loss_mean"] for p in points]
    return {"points": points, "spread": float(max(means) - min(means)) if means else None}


def _points(S: np.ndarray, values: np.ndarray) -> list[dict]:
    out = []
    for s in np.unique(S):
        v = values[(S == s) & np.isfinite(values) & (values > 0)]
        if v.size:
            out.append({"S": float(s), "geo_mean": float(np.exp(np.log(v).mean())), "n": int(v.size)})
    return out
