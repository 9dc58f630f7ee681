"""Tuning cost: best-so-far loss against cumulative training compute, for µP with tuning (the
runs of search sweeps, mode 'search') and for learnable multipliers (labels with '+', any
mode), each per sweep, parametrization and width, runs in start order.

Every run's compute counts (diverged and failed runs cost compute too, when their flops are
known); a diverged run never improves the best-so-far loss. A curve is one realisation of a
tuning process, so its numbers carry no interval.

`search_samples` lists what a search sweep tried: per sweep, every sample's searched parameters
(the config columns that vary between its runs), outcome and loss, best first, and the best
finished sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import UserError

from . import frames
from .results import Result, optional


@dataclass(frozen=True, kw_only=True)
class TuningPoint(Result):
    compute: float                # cumulative, up to and including this run
    best_loss: float              # so far


@dataclass(frozen=True, kw_only=True)
class TuningCurve(Result):
    group: dict[str, Any]
    label: str
    kind: str                     # "search" or "multipliers"
    n_trials: int
    n_finished: int
    total_compute: float
    best_loss: float | None
    compute_to_best: float | None
    points: list[TuningPoint]
    compute_to_match: dict[str, float | None] | None = optional()   # search curves: per multiplier curve


@dataclass(frozen=True, kw_only=True)
class TuningResult(Result):
    analysis: str = "tuning"
    compute: str                  # the compute column: flops, or wall_time_s
    loss: str
    selection: str
    treatment: dict[str, str]
    curves: list[TuningCurve]
    warnings: list[str]


def tuning_cost(trials: pd.DataFrame, *, size: str = "d_model", loss: str = "final_val_loss",
                compute: str = "flops") -> TuningResult:
    frames.require_columns(trials, [loss, "parametrization", "outcome"], "the tuning-cost curve")
    warnings: list[str] = []
    if compute not in trials.columns:
        if "wall_time_s" not in trials.columns:
            raise UserError(f"the tuning-cost curve needs a compute column ({compute} or wall_time_s)")
        warnings.append(f"no {compute} column: compute is wall_time_s")
        compute = "wall_time_s"
    search = trials["mode"].eq("search") if "mode" in trials.columns else pd.Series(False, index=trials.index)
    chosen = trials[search | trials["parametrization"].map(frames.is_lrm)]
    if chosen.empty:
        raise UserError("the tuning-cost curve needs search-sweep runs (mode: search) or runs with learnable "
                        "multipliers; these tables have neither")
    if "start_time" not in chosen.columns or chosen["start_time"].isna().all():
        warnings.append("no start_time: runs are taken in table order")
    keys = [k for k in ("sweep", "parametrization", size) if k in chosen.columns]
    curves = [_curve(group, sub, loss, compute) for group, sub in frames.iter_groups(chosen, keys)]
    _match(curves, size)
    return TuningResult(compute=compute, loss=loss,
                        selection="search-sweep runs (µP with tuning) and runs with learnable multipliers",
                        treatment={"diverged": "compute counted, never improves the best loss",
                                   "failed": "compute counted when known, never improves the best loss"},
                        curves=[TuningCurve(**c) for c in curves], warnings=warnings)


def _curve(group: dict, runs: pd.DataFrame, loss: str, compute: str) -> dict:
    if "start_time" in runs.columns and runs["start_time"].notna().any():
        runs = runs.sort_values("start_time", kind="stable")
    cost = pd.to_numeric(runs[compute], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    values = pd.to_numeric(runs[loss], errors="coerce").to_numpy(dtype=float)
    values = np.where(runs["outcome"].eq("finished").to_numpy() & np.isfinite(values), values, np.inf)
    best = np.minimum.accumulate(values)
    cumulative = np.cumsum(cost)
    finite = np.isfinite(best)
    kind = "search" if runs.get("mode", pd.Series(dtype=str)).eq("search").any() else "multipliers"
    return {"group": group, "label": frames.group_label(group), "kind": kind, "n_trials": len(runs),
            "n_finished": int(runs["outcome"].eq("finished").sum()), "total_compute": float(cumulative[-1]),
            "best_loss": float(best[-1]) if finite.any() else None,
            "compute_to_best": float(cumulative[np.argmax(best == best[-1])]) if finite.any() else None,
            "points": [TuningPoint(compute=float(c), best_loss=float(b)) for c, b in zip(cumulative[finite], best[finite])]}


def _match(curves: list[dict], size: str) -> None:
    """For each search curve: the compute it needed to match each multiplier curve's best loss
    at the same width (None when it never did)."""
    for curve in curves:
        if curve["kind"] != "search":
            continue
        curve["compute_to_match"] = {}
        for other in curves:
            same_size = other["group"].get(size) == curve["group"].get(size)
            if other["kind"] != "multipliers" or not same_size or other["best_loss"] is None:
                continue
            reached = [p.compute for p in curve["points"] if p.best_loss <= other["best_loss"]]
            curve["compute_to_match"][other["label"]] = reached[0] if reached else None


@dataclass(frozen=True, kw_only=True)
class SearchSample(Result):
    label: str | None             # the trial's short name
    params: dict[str, Any]        # the searched parameters' values
    outcome: str
    loss: float | None            # None unless finished with a finite loss


@dataclass(frozen=True, kw_only=True)
class SearchSweep(Result):
    sweep: str | None
    searched: list[str]           # the config columns that vary between the samples
    samples: list[SearchSample]   # finished by loss (best first), then the others
    best: SearchSample | None = optional()   # the finished sample with the lowest loss


@dataclass(frozen=True, kw_only=True)
class SearchResult(Result):
    analysis: str = "search"
    loss: str
    treatment: dict[str, str]
    sweeps: list[SearchSweep]
    warnings: list[str]


def has_search_runs(trials: pd.DataFrame) -> bool:
    return "mode" in trials.columns and bool(trials["mode"].eq("search").any())


def search_samples(trials: pd.DataFrame, *, loss: str = "final_val_loss") -> SearchResult:
    frames.require_columns(trials, [loss, "outcome", "mode"], "the search-sweep samples")
    runs = trials[trials["mode"].eq("search")]
    if runs.empty:
        raise UserError("the search-sweep samples need runs of a search sweep (mode: search)")
    sweeps, warnings = [], []
    keys = ["sweep"] if "sweep" in runs.columns else []
    for group, sub in (frames.iter_groups(runs, keys) if keys else [({}, runs)]):
        searched = [c for c in frames.config_columns(sub) if c != "parametrization"
                    and sub[c].nunique(dropna=True) > 1]
        if not searched:
            warnings.append(f"search sweep {group.get('sweep')}: its samples do not differ in any parameter")
        values = pd.to_numeric(sub[loss], errors="coerce")
        scored = sub["outcome"].eq("finished") & np.isfinite(values)
        order = sub.assign(_scored=~scored, _loss=values.where(scored)).sort_values(["_scored", "_loss"], kind="stable")
        samples = [SearchSample(label=row.get("label"), params={c: row[c] for c in searched},
                                outcome=str(row["outcome"]), loss=None if row["_scored"] else float(row["_loss"]))
                   for _, row in order.iterrows()]
        best = samples[0] if samples and samples[0].loss is not None else None
        sweeps.append(SearchSweep(sweep=group.get("sweep"), searched=searched, samples=samples, best=best))
    return SearchResult(loss=loss, sweeps=sweeps, warnings=warnings,
                        treatment={"diverged": "listed without a loss, after the finished samples",
                                   "failed": "listed without a loss, after the finished samples"})
