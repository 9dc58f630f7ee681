"""Selecting and grouping trials for the fits, with one treatment of outcomes for all of them.

Outcomes: `finished` runs count with their loss; `diverged` runs count with loss = +inf
(worse than any finite loss; never an optimum; left out of means and parabolas but counted);
`failed`, `running` and `unknown` runs are excluded (they say nothing about the config).
A finished run whose loss is NaN/missing is excluded and reported in the fit's warnings.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from orchestrator.layout import OUTCOME_DIVERGED, OUTCOME_FAILED, USABLE_OUTCOMES
from trainer import metrics
from trainer.config import UserError

from .columns import IDENTITY_COLUMNS

# Run-level metric columns of the trials table: the trainer's report keys and final metrics
# (trainer/metrics.py) that hold one number per run, not the `final` flag or per-layer keys.
METRIC_COLUMNS = set(metrics.REPORT_KEYS) - {metrics.LR} | {
    metrics.N_PARAMS, metrics.N_PARAMS_NONEMBEDDING, metrics.WALL_TIME_S, metrics.DIVERGED_AT_STEP,
    metrics.MIN_VAL_LOSS, metrics.STATUS}
TREATMENT = {
    OUTCOME_DIVERGED: "kept with loss = +inf: never an optimum, left out of means and parabolas, counted in n_diverged",
    OUTCOME_FAILED: "excluded (an error, not a property of the config); counted under outcomes",
    "nan_loss": "finished runs with a missing/NaN loss are excluded and listed in warnings",
}


def require_columns(frame: pd.DataFrame, columns: Iterable[str], purpose: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        present = ", ".join(sorted(c for c in frame.columns if "/" not in c)[:40])
        raise UserError(f"{purpose} needs column(s) {missing}, missing from the trials table "
                        f"(columns present include: {present}).{' ' + hint if hint else ''}")


def require_numeric(frame: pd.DataFrame, columns: Iterable[str], purpose: str) -> None:
    """Columns used as axes (hyperparameter, size) must hold numbers."""
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().all() and frame[col].notna().any():
            sample = ", ".join(map(str, frame[col].dropna().unique()[:3]))
            raise UserError(f"{purpose}: column {col!r} is not numeric (values like {sample}); "
                            "pick a numeric column (e.g. --hp lr, --size d_model)")


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that describe a run's config (params), not its identity or its metrics."""
    return [c for c in frame.columns if c not in IDENTITY_COLUMNS and c not in METRIC_COLUMNS
            and "/" not in c and not c.startswith(("final_", "last_"))]


def grid_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """Runs of designed (grid) sweeps; Optuna search runs sample hyperparameters at random
    and are only used by the tuning-cost analysis."""
    if "mode" not in trials.columns:
        return trials
    return trials[trials["mode"].fillna("grid").ne("search")]


def usable(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["outcome"].isin(USABLE_OUTCOMES)]


def outcome_counts(trials: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in trials["outcome"].fillna("unknown").value_counts().items()}


def losses(frame: pd.DataFrame, loss: str) -> np.ndarray:
    """The loss of each usable run: the value when finished, +inf when diverged, NaN when the
    value is missing on a finished run (callers drop and report those)."""
    values = pd.to_numeric(frame[loss], errors="coerce").to_numpy(dtype=float)
    return np.where(frame["outcome"].eq(OUTCOME_DIVERGED).to_numpy(), np.inf, values)


def is_lrm(label: str) -> bool:
    """Learnable multipliers: labels are scheme + '+' + multiplier kind (CONTRACTS.md)."""
    return "+" in str(label)


def group_keys(trials: pd.DataFrame) -> list[str]:
    """Fits run per parametrization, and per sweep when the tables hold several sweeps
    (each sweep is one designed experiment: a width sweep, a sqrt(η/λ) sweep, ...)."""
    keys = ["parametrization"]
    if "sweep" in trials.columns and trials["sweep"].nunique(dropna=True) > 1:
        keys = ["sweep"] + keys
    return keys


def group_label(group: dict) -> str:
    label = str(group.get("parametrization", "all"))
    extra = [f"{k}={v}" for k, v in group.items() if k != "parametrization"]
    return label + (f" [{', '.join(extra)}]" if extra else "")


def iter_groups(frame: pd.DataFrame, keys: list[str]):
    """(group dict, sub-frame) for each combination of `keys`, in sorted order."""
    if frame.empty:
        return
    for values, sub in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield {k: _plain(v) for k, v in zip(keys, values)}, sub


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def varying_within(frame: pd.DataFrame, cell: list[str], candidates: list[str]) -> list[str]:
    """Candidate columns that take more than one value inside some cell of `cell` columns."""
    cols = [c for c in candidates if c in frame.columns and c not in cell
            and frame[c].nunique(dropna=False) > 1]
    if not cols or frame.empty:
        return []
    counts = frame.groupby(cell, dropna=False)[cols].nunique(dropna=False).max()
    return [c for c in cols if counts[c] > 1]


def arm_columns(runs: pd.DataFrame, keys: list[str], size: str, hp: str) -> list[str]:
    """Config columns that vary between runs of one group at the same size, hp and seed (a depth
    rule, a width recipe, the multipliers' LR exponent): they make arms, not seeds of one arm."""
    cell = keys + [size] + ([hp] if hp in runs.columns else []) + (["seed"] if "seed" in runs.columns else [])
    return varying_within(runs, cell, config_columns(runs))


def best_cells(frame: pd.DataFrame, by: list[str], hp: str, loss: str) -> pd.DataFrame:
    """For each combination of `by`, the runs at the `hp` value with the lowest mean loss over
    its finished seeds (diverged runs never win). The tuned point of each size."""
    runs = usable(frame).copy()
    runs["_loss"] = losses(runs, loss)
    runs = runs[~np.isnan(runs["_loss"])]
    if runs.empty:
        return runs.drop(columns="_loss")
    finite = runs[np.isfinite(runs["_loss"])]
    means = finite.groupby(by + [hp], dropna=False)["_loss"].mean().reset_index()
    if means.empty:
        return finite.drop(columns="_loss")
    best = means.loc[means.groupby(by, dropna=False)["_loss"].idxmin(), by + [hp]]
    return finite.merge(best, on=by + [hp]).drop(columns="_loss")
