"""How fast the learned multipliers move, against width: the paper's first open question
(docs/science.md §5: should the multipliers' own LR scale with width?) asks for a rate that stays
width-independent, as µP asks of every other parameter's relative update.

Per run: the multipliers' relative change per step, |Δ log s| / Δstep between consecutive reports
of each mult/<layer>/<stat> series (scalar, row_rms, col_rms; steps after warm-up), the median
over report intervals, the geometric mean over layers and stats. It is the net change between
reports, not each step's update (Adam steps that cancel within an interval do not count). Per
group (arms split by any config column that varies at one size, e.g. the multipliers' LR
width exponent): its width exponent by log-log OLS over runs, with the OLS t-interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.config import UserError
from trainer.metrics import MULT

from . import frames
from .results import Result, Row
from .stats import LogLogFit, loglog_fit

STATS = ("scalar", "row_rms", "col_rms")   # the multipliers' size; means and extremes add nothing


@dataclass(frozen=True, kw_only=True)
class MultiplierUpdatesGroup(Result):
    group: dict
    label: str
    fit: LogLogFit          # relative change per step ∝ size^exponent
    points: list[Row]       # per run: size, seed, rate, final loss


@dataclass(frozen=True, kw_only=True)
class MultiplierUpdatesResult(Result):
    analysis: str = "multiplier_updates"
    size: str
    loss: str
    rate: str
    treatment: dict[str, str]
    groups: list[MultiplierUpdatesGroup]
    ci_level: float
    warnings: list[str]


def applies(trials: pd.DataFrame, history: pd.DataFrame) -> bool:
    return not history.empty and history["key"].str.startswith(MULT).any()


def relative_rates(history: pd.DataFrame, after_step: int = 0) -> pd.Series:
    """run_id -> the multipliers' median relative change per step (see the module docstring)."""
    h = history[history["key"].str.startswith(MULT) & history["key"].str.rsplit("/", n=1).str[-1].isin(STATS)
                & (history["step"] > after_step)]
    h = h[h["value"] > 0].sort_values(["run_id", "key", "step"])
    if h.empty:
        return pd.Series(dtype=float)
    grouped = h.groupby(["run_id", "key"])
    per_step = np.abs(grouped["value"].transform(lambda v: np.log(v).diff())) / grouped["step"].diff()
    per_series = per_step.groupby([h["run_id"], h["key"]]).median().dropna()
    per_series = per_series[per_series > 0]
    return np.exp(np.log(per_series).groupby(level="run_id").mean())


def fit_multiplier_updates(trials: pd.DataFrame, history: pd.DataFrame, *, size: str = "d_model", hp: str = "lr",
                           loss: str = "final_val_loss", level: float = 0.95) -> MultiplierUpdatesResult:
    frames.require_columns(trials, [size, "parametrization", "outcome", "run_id"], "the multipliers' update rate")
    runs = frames.grid_runs(trials)
    runs = runs[runs["outcome"].eq("finished") & runs["parametrization"].map(frames.is_lrm)]
    warmup = int(pd.to_numeric(runs.get("warmup_steps", pd.Series([0])), errors="coerce").fillna(0).max())
    rates = relative_rates(history[history["run_id"].isin(runs["run_id"])], after_step=warmup)
    if rates.empty:
        raise UserError("the multipliers' update rate needs mult/... histories of finished runs with learnable "
                        "multipliers at ≥ 2 reports after warm-up")
    runs = runs[runs["run_id"].isin(rates.index)]
    keys = frames.group_keys(runs)
    keys += frames.arm_columns(runs, keys, size, hp)
    runs = runs.assign(_rate=runs["run_id"].map(rates))
    groups, warnings = [], []
    for group, sub in frames.iter_groups(runs, keys):
        if hp in sub.columns and loss in sub.columns and sub[hp].nunique() > 1:
            sub = frames.best_cells(sub, [size], hp, loss)
        fit = loglog_fit(sub[size].to_numpy(float), sub["_rate"].to_numpy(float), level)
        if fit.exponent is None:
            warnings.append(f"{frames.group_label(group)}: one value of {size}, no exponent")
        points = [{"size": float(r[size]), "seed": None if pd.isna(r.get("seed")) else int(r["seed"]),
                   "rate": float(r["_rate"]), "loss": None if pd.isna(r.get(loss)) else float(r[loss])}
                  for _, r in sub.sort_values([size]).iterrows()]
        groups.append(MultiplierUpdatesGroup(group=group, label=frames.group_label(group), fit=fit, points=points))
    return MultiplierUpdatesResult(size=size, loss=loss, groups=groups, ci_level=level, warnings=warnings,
                                   treatment={"diverged": "excluded (its multipliers stopped moving)",
                                              "failed": "excluded"},
                                   rate="median over report intervals of |Δ log multiplier| per step (scalar, "
                                        "row and column RMS of each matrix; after warm-up), geometric mean over them")
