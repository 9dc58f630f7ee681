"""Learned multipliers vs width: per layer role, the learned multiplier (scalar, or the RMS and
mean of vector rows/columns) as a power law in width, beside the µP prediction.

Runs: finished grid runs with learnable multipliers (labels with '+'); at each width, the runs
at the swept hyperparameter value with the best mean loss (the tuned point of that width).
Each run's value of a role is the geometric mean over blocks. The head has no multiplier in the
paper's placement: its scale is then read from the final RMSNorm weight (norm/final_norm/mean),
which acts as the head's column multiplier (docs/science.md §2). `head total` multiplies that by
the head matrix's effective RMS: the head's whole scale, which is what µP's d⁻¹ is about when
the stored head matrix does not stay width-independent.

µP prediction (docs/science.md §5, for the total scale at fixed η and λ): d⁻¹ for the head's logit
scale, d⁻² for the q·k product (attn_q × attn_k multipliers of the same block). Beside them,
the stored matrices' RMS (weight_rms) against width: the paper finds it roughly
width-independent once the multipliers carry the scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import UserError

from . import frames
from .layers import block_product, role_values
from .results import Result, inline, optional
from .stats import LogLogFit, loglog_fit

STATS = ("scalar", "row_rms", "col_rms", "row_mean", "col_mean")
PREDICTIONS = {"head": -1.0, "attn_q·attn_k": -2.0}
WIDTH = "d_model"   # PREDICTIONS are exponents in width: against depth (n_layers) µP predicts nothing here
HEAD_TOTAL = "head total"   # final-norm weight × effective head RMS (multiplier × matrix)
FINAL_NORM = "norm/final_norm/mean"   # the head's column multiplier in the paper's placement
HEAD_EFF_RMS = "eff_rms/head"


@dataclass(frozen=True, kw_only=True)
class WidthPoint(Result):
    """The values of one series at one width: their geometric mean and range over runs."""
    size: float
    geo_mean: float
    min: float
    max: float
    n: int


@dataclass(frozen=True, kw_only=True)
class MultiplierSeries(Result):
    """A learned multiplier (or product of them) against width."""
    name: str                     # role, plus the stat of a vector multiplier ("attn_q row_rms")
    role: str
    source: str                   # the metrics it was read from
    fit: LogLogFit = inline()
    prediction: float | None      # µP width exponent, where there is one
    minus_prediction: float | None
    points: list[WidthPoint]


@dataclass(frozen=True, kw_only=True)
class MatrixNorm(Result):
    """The stored matrix RMS (weight_rms) of one role against width."""
    role: str
    fit: LogLogFit = inline()
    points: list[WidthPoint]


@dataclass(frozen=True, kw_only=True)
class MultiplierGroup(Result):
    group: dict[str, Any]
    label: str
    n_runs: int
    n_sizes: int
    series: list[MultiplierSeries]
    note: str | None = optional()  # why there is no width exponent
    matrix_norms: list[MatrixNorm] | None = optional()


@dataclass(frozen=True, kw_only=True)
class MultiplierResult(Result):
    analysis: str = "multipliers"
    size: str
    selection: str
    aggregation: str
    predictions: dict[str, float]  # µP width exponent per role
    treatment: dict[str, str]
    prediction_note: str
    ci_level: float
    groups: list[MultiplierGroup]
    warnings: list[str]


def fit_multipliers(trials: pd.DataFrame, *, size: str = "d_model", hp: str = "lr", loss: str = "final_val_loss",
                    level: float = 0.95) -> MultiplierResult:
    frames.require_columns(trials, [size, "parametrization", "outcome"], "learned multipliers vs width")
    frames.require_numeric(trials, [size], "learned multipliers vs width")
    if not any(c.startswith("mult/") for c in trials.columns):
        raise UserError("learned multipliers vs width needs mult/<layer>/... metrics, and no run has them: "
                        "no run had learnable multipliers (labels like mup+scalar, sp+vector)")
    runs = frames.grid_runs(trials)
    runs = runs[runs["outcome"].eq("finished") & runs["parametrization"].map(frames.is_lrm)]
    if runs.empty:
        raise UserError("learned multipliers vs width: no finished grid run with learnable multipliers")
    warnings: list[str] = []
    keys = frames.group_keys(runs)
    # a config column that varies at one size, hp and seed (the multipliers' LR exponent, a
    # depth rule) makes arms: fit each on its own instead of pooling them as seeds
    keys += frames.arm_columns(runs, keys, size, hp)
    groups = []
    predictions = PREDICTIONS if size == WIDTH else {}
    for group, sub in frames.iter_groups(runs, keys):
        if hp in sub.columns and loss in sub.columns and sub[hp].nunique() > 1:
            sub = frames.best_cells(sub, [size], hp, loss)
        groups.append(_fit_group(group, sub, size, level, predictions))
    if not any(g.n_sizes >= 2 for g in groups):
        warnings.append(f"every group has one value of {size}: exponents need runs at ≥ 2 widths")
    return MultiplierResult(size=size, selection=f"finished grid runs at each {size}'s best {hp}",
                            aggregation="geometric mean of |multiplier| over blocks", predictions=predictions,
                            treatment={"diverged": "excluded (a diverged run's multipliers are not a trained value)",
                                       "failed": "excluded"},
                            prediction_note=("µP prediction for the total scale at fixed η, λ (docs/science.md §5); "
                                             "under scheme mup the fixed µP multipliers already carry these factors"
                                             if predictions else f"µP makes no prediction against {size}"),
                            ci_level=level, groups=groups, warnings=warnings)


def role_series(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Series name -> one value per run: per role and stat, the q·k product, the head's scale."""
    series: dict[str, np.ndarray] = {}
    for stat in STATS:
        suffix = "" if stat == "scalar" else f" {stat}"
        for role, values in role_values(frame, "mult", stat).items():
            series[role + suffix] = values
        if stat in ("scalar", "row_rms"):
            qk = block_product(frame, "attn_q", "attn_k", stat)
            if qk is not None:
                series["attn_q·attn_k" + suffix] = qk
    if FINAL_NORM in frame.columns:
        final_norm = np.abs(frame[FINAL_NORM].to_numpy(dtype=float))
        series.setdefault("head", final_norm)
        if HEAD_EFF_RMS in frame.columns:
            # µP's d⁻¹ is for the head's entries at a width-independent matrix scale: when the stored
            # head matrix itself shrinks with width, only the product of all its scales compares
            series[HEAD_TOTAL] = final_norm * frame[HEAD_EFF_RMS].to_numpy(dtype=float)
    return {k: v for k, v in series.items() if np.isfinite(v).any()}


def _fit_group(group: dict, runs: pd.DataFrame, size: str, level: float,
               predictions: dict[str, float]) -> MultiplierGroup:
    widths = runs[size].to_numpy(dtype=float)
    n_sizes = int(np.unique(widths).size)
    result = {"group": group, "label": frames.group_label(group), "n_runs": len(runs), "n_sizes": n_sizes,
              "series": []}
    if n_sizes < 2:
        result["note"] = f"one value of {size}: no width exponent"
        return MultiplierGroup(**result)
    result["matrix_norms"] = [MatrixNorm(role=role, fit=loglog_fit(widths, values, level), points=_points(widths, values))
                              for role, values in role_values(runs, "weight_rms").items()]
    for name, values in role_series(runs).items():
        fit = loglog_fit(widths, values, level)
        role = name.split(" ")[0]
        prediction = predictions.get(role)
        result["series"].append(MultiplierSeries(
            name=name, role=role, source=_source(name, runs), fit=fit, prediction=prediction,
            minus_prediction=None if prediction is None or fit.exponent is None else fit.exponent - prediction,
            points=_points(widths, values)))
    return MultiplierGroup(**result)


def _source(name: str, runs: pd.DataFrame) -> str:
    if name == HEAD_TOTAL:
        return f"{FINAL_NORM} × {HEAD_EFF_RMS} (the head's whole scale)"
    if name == "head" and not any(c.startswith("mult/head/") for c in runs.columns):
        return f"{FINAL_NORM} (the head's column multiplier)"
    return "mult/... metrics"


def _points(widths: np.ndarray, values: np.ndarray) -> list[WidthPoint]:
    out = []
    for w in np.unique(widths):
        v = values[(widths == w) & np.isfinite(values) & (values > 0)]
        if v.size:
            out.append(WidthPoint(size=float(w), geo_mean=float(np.exp(np.log(v).mean())),
                                  min=float(v.min()), max=float(v.max()), n=int(v.size)))
    return out
