"""Coordinate check (microsoft/mup): mean |activation| of each block (act/<name> histories)
against width over the first recorded steps. Under µP the curves are flat in width; under SP
they grow. Per name and step, the log-log slope against width (with its OLS interval)
summarises the plot: ≈ 0 means width-independent activations.

Runs: finished and diverged grid runs (the first steps precede any divergence); when the
swept hyperparameter varies, the value present at every width nearest the middle of the grid
(in log2), so every width is compared at one setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.layout import OUTCOME_FINISHED
from trainer import metrics
from trainer.config import UserError

from . import frames
from .results import Result, inline
from .stats import LogLogFit, loglog_fit


@dataclass(frozen=True, kw_only=True)
class CoordSlope(Result):
    """Mean |activation| of one name at one step against width."""
    name: str
    step: int
    fit: LogLogFit = inline()


@dataclass(frozen=True, kw_only=True)
class CoordPoint(Result):
    name: str
    step: int
    size: float
    mean_abs: float               # geometric mean of |activation| over the runs
    n: int


@dataclass(frozen=True, kw_only=True)
class CoordGroup(Result):
    group: dict[str, Any]
    label: str
    setting: float | None         # the hp value every width is compared at
    max_abs_exponent_last_step: float | None
    slopes: list[CoordSlope]      # per activation name and step
    points: list[CoordPoint]      # per name, step and width


@dataclass(frozen=True, kw_only=True)
class CoordCheckResult(Result):
    analysis: str = "coord_check"
    size: str
    steps: list[int]
    ci_level: float
    selection: str
    groups: list[CoordGroup]
    treatment: dict[str, str]
    warnings: list[str]


def coord_check(trials: pd.DataFrame, history: pd.DataFrame, *, size: str = "d_model", hp: str = "lr",
                max_steps: int = 5, level: float = 0.95) -> CoordCheckResult:
    frames.require_columns(trials, [size, "parametrization", "outcome", "run_id"], "the coordinate check")
    acts = history[history["key"].str.startswith("act/")] if len(history) else history
    if acts.empty:
        raise UserError("the coordinate check needs act/<name> metric histories; none were logged "
                        "(train with record_activations: true, or run `scalelab coord-check`)")
    runs = frames.usable(frames.grid_runs(trials))
    steps = np.sort(acts["step"].unique())[:max_steps]
    acts = acts[acts["step"].isin(steps)]
    keys = frames.group_keys(runs)
    warnings: list[str] = []
    groups = []
    for group, sub in frames.iter_groups(runs, keys):
        sub, setting = _one_setting(sub, size, hp)
        data = acts.merge(sub[["run_id", size]], on="run_id")
        if data.empty or data[size].nunique() < 2:
            continue
        groups.append(_fit_group(group, data, size, setting, level))
    if not groups:
        warnings.append(f"no parametrization has act/ histories at ≥ 2 values of {size}: nothing to compare")
    return CoordCheckResult(size=size, steps=steps.tolist(), ci_level=level,
                            selection=f"one {hp} per parametrization, present at every {size}", groups=groups,
                            treatment={"diverged": "included (the first steps precede the divergence)",
                                       "failed": "excluded"},
                            warnings=warnings)


def coord_check_rows(rows: list[dict], *, max_steps: int, level: float = 0.95) -> CoordCheckResult:
    """The same fit for the rows of `scalelab coord-check` (trainer.coordcheck.run: scheme, width,
    seed, step, layer, value), so a coordinate check has one analysis whether its activations
    come from a sweep's act/ histories or from the command."""
    df = pd.DataFrame(rows)
    run_id = df["scheme"].astype(str) + "/" + df["width"].astype(str) + "/" + df["seed"].astype(str)
    trials = pd.DataFrame({"run_id": run_id, "parametrization": df["scheme"], "d_model": df["width"],
                           "outcome": OUTCOME_FINISHED}).drop_duplicates("run_id")
    history = pd.DataFrame({"run_id": run_id, "key": metrics.ACT + df["layer"].astype(str), "step": df["step"],
                            "value": df["value"]})
    return coord_check(trials, history, size="d_model", max_steps=max_steps, level=level)


def _one_setting(runs: pd.DataFrame, size: str, hp: str) -> tuple[pd.DataFrame, float | None]:
    if hp not in runs.columns or runs[hp].nunique() <= 1:
        return runs, None if hp not in runs.columns or runs.empty else float(runs[hp].iloc[0])
    per_size = runs.groupby(size)[hp].apply(lambda s: set(s.round(15)))
    common = sorted(set.intersection(*per_size)) if len(per_size) else []
    candidates = np.array(common or sorted(runs[hp].round(15).unique()))
    logs = np.log2(candidates)
    chosen = float(candidates[np.argmin(np.abs(logs - np.median(logs)))])
    return runs[np.isclose(runs[hp], chosen)], chosen


def _fit_group(group: dict, data: pd.DataFrame, size: str, setting: float | None, level: float) -> CoordGroup:
    slopes, points = [], []
    for (key, step), sub in data.groupby(["key", "step"], sort=True):
        name = key.split("/", 1)[1]
        fit = loglog_fit(sub[size].to_numpy(float), sub["value"].abs().to_numpy(float), level)
        slopes.append(CoordSlope(name=name, step=int(step), fit=fit))
        for width, part in sub.groupby(size):
            v = part["value"].abs().to_numpy(float)
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                points.append(CoordPoint(name=name, step=int(step), size=float(width),
                                         mean_abs=float(np.exp(np.log(v).mean())), n=int(v.size)))
    last = max(s.step for s in slopes)
    worst = max((abs(s.fit.exponent) for s in slopes if s.step == last and s.fit.exponent is not None), default=None)
    return CoordGroup(group=group, label=frames.group_label(group), setting=setting,
                      max_abs_exponent_last_step=worst, slopes=slopes, points=points)
