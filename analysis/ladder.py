"""The tuning ladder (docs/science.md §5, the paper's first claim): at each level of µP tuning,
learnable multipliers against their parent configuration, with what the level's tuning cost.

A level is a grid sweep that runs a parent parametrization (e.g. `mup`) and the same with
learnable multipliers (`mup+vector`) at one transfer width, one configuration each but the seed: tuned when its base came from a
search (`from_study`: the trials carry the study's name), untuned otherwise. The search is the
search sweep of that name in the same tables; its tuned keys are the columns its samples vary,
its cost is its runs: their number, CPU-hours (training wall time × torch threads) and FLOPs.

Per level: each arm's seed-mean loss with a t-interval, LRM − parent with Welch's interval and
p-value. Across levels: LRM at each level against the parent of every level that tuned strictly
more (the claim that learnable but untuned multipliers reach what tuning LR multipliers gets).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from trainer.config import UserError
from trainer.metrics import ELAPSED_S, FLOPS

from . import frames
from .results import Result, Row
from .stats import t_interval, welch_contrast

NOT_TUNED = ("seed", "trial_hash", "run_id")   # columns a search's samples differ in that are not its space


@dataclass(frozen=True, kw_only=True)
class LadderResult(Result):
    analysis: str = "ladder"
    size: str
    loss: str
    selection: str
    levels: list[Row]       # per level and LRM label: arms, difference, tuning cost
    untuned: list[Row]      # LRM at each level against the parent of each level that tuned strictly more
    ci_level: float
    ci_method: str
    warnings: list[str]


def applies(trials: pd.DataFrame) -> bool:
    """Only tables holding a transfer from a search have a ladder."""
    return "from_study" in trials.columns and trials["from_study"].notna().any()


def fit_ladder(trials: pd.DataFrame, *, size: str = "d_model", loss: str = "final_val_loss",
               level: float = 0.95) -> LadderResult:
    frames.require_columns(trials, [size, loss, "parametrization", "outcome", "sweep"], "the tuning ladder")
    warnings: list[str] = []
    runs = frames.grid_runs(trials)
    study = runs["from_study"] if "from_study" in runs.columns else pd.Series(None, index=runs.index)
    rows = []
    for sweep, sub in runs.groupby("sweep", sort=True):
        studies = study[sub.index].dropna().unique()
        rows += _level_rows(str(sweep), str(studies[0]) if len(studies) else None, sub, trials, size, loss,
                            level, warnings)
    if not rows:
        raise UserError("the tuning ladder: no grid sweep runs a parametrization both with and without learnable "
                        "multipliers at one width (e.g. multipliers: [none, vector])")
    rows.sort(key=lambda r: (len(r["tuned"]), r["level"]))
    return LadderResult(size=size, loss=loss,
                        selection=f"finished runs of each level's widest {size}; a level's search: the search "
                                  "sweep its from_study names",
                        levels=rows, untuned=_untuned(rows, runs, size, loss, level), ci_level=level,
                        ci_method="t-interval of each arm's seed mean; Welch t-interval and p of the difference",
                        warnings=warnings)


def _level_rows(sweep: str, study: str | None, sub: pd.DataFrame, trials: pd.DataFrame, size: str, loss: str,
                level: float, warnings: list[str]) -> list[Row]:
    width = pd.to_numeric(sub[size], errors="coerce").max()
    at = sub[pd.to_numeric(sub[size], errors="coerce") == width]
    labels = sorted(at["parametrization"].dropna().unique())
    config = [c for c in frames.config_columns(at) if c not in NOT_TUNED]
    if frames.varying_within(at, ["parametrization"], config):
        return []      # an arm with several configurations (an LR grid, say) is not one level of tuning
    rows = []
    for parent in (p for p in labels if not frames.is_lrm(p)):
        for lrm in (p for p in labels if frames.is_lrm(p) and p.split("+")[0] == parent):
            a, b = _losses(at, parent, loss), _losses(at, lrm, loss)
            diff, diff_ci = welch_contrast([b, a], [1.0, -1.0], level)
            rows.append({"level": sweep, "study": study, size: float(width), "parent": parent, "lrm": lrm,
                         "parent_loss": _arm(a, level), "lrm_loss": _arm(b, level),
                         "diff": diff, "diff_ci": diff_ci, "p_value": _welch_p(b, a),
                         **_search_cost(study, trials, sweep, warnings)})
    return rows


def _losses(frame: pd.DataFrame, label: str, loss: str) -> np.ndarray:
    values = frames.losses(frames.usable(frame[frame["parametrization"] == label]), loss)
    return values[np.isfinite(values)]      # a diverged seed has no loss to average (the runs table shows it)


def _arm(values: np.ndarray, level: float) -> Row:
    n = int(values.size)
    if n == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    mean = float(values.mean())
    sem = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci": t_interval(mean, sem, n - 1, level), "n": n}


def _welch_p(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2 or b.size < 2 or (a.var() == 0 and b.var() == 0):
        return None
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def _search_cost(study: str | None, trials: pd.DataFrame, level: str, warnings: list[str]) -> Row:
    """What the level's search cost and what it tuned, from the search sweep's own runs."""
    if study is None:
        return {"tuned": [], "search_trials": 0, "cpu_hours": 0.0, "flops": 0.0}
    search = trials[(trials["sweep"] == study) & trials.get("mode", pd.Series("", index=trials.index)).eq("search")]
    if search.empty:
        warnings.append(f"{level}: its search {study!r} is not in these tables (report it together: "
                        f"scalelab report EXPERIMENT with both sweeps); its cost is unknown")
        return {"tuned": [], "search_trials": None, "cpu_hours": None, "flops": None}
    varied = [c for c in frames.config_columns(search) if c not in NOT_TUNED and search[c].nunique() > 1]
    seconds = pd.to_numeric(search.get(ELAPSED_S, search.get("wall_time_s")), errors="coerce").fillna(0.0)
    threads = pd.to_numeric(search.get("threads", 1), errors="coerce").fillna(1).clip(lower=1)
    flops = pd.to_numeric(search.get(FLOPS), errors="coerce")
    return {"tuned": sorted(varied), "search_trials": int(len(search)),
            "cpu_hours": float((seconds * threads).sum() / 3600),
            "flops": float(flops.sum()) if flops.notna().any() else None}


def _untuned(rows: list[Row], runs: pd.DataFrame, size: str, loss: str, level: float) -> list[Row]:
    """LRM at each level against the parent of every level that tuned strictly more (its tuned
    keys a proper superset: untuned against any tuned level, LR-tuned against LR + LR
    multipliers), same width: can learning the multipliers stand in for the extra tuning?"""
    out = []
    for u in (r for r in rows if r["search_trials"] is not None):
        lrm = _losses(_at(runs, u, size), u["lrm"], loss)
        for t in (r for r in rows if r["search_trials"] is not None and set(u["tuned"]) < set(r["tuned"])
                  and r[size] == u[size] and r["parent"] == u["parent"]):
            parent = _losses(_at(runs, t, size), t["parent"], loss)
            diff, ci = welch_contrast([lrm, parent], [1.0, -1.0], level)
            out.append({"untuned_level": u["level"], "untuned_keys": u["tuned"], "lrm": u["lrm"],
                        "tuned_level": t["level"], "tuned": t["tuned"], "parent": t["parent"], size: u[size],
                        "diff": diff, "diff_ci": ci, "p_value": _welch_p(lrm, parent)})
    return out


def _at(runs: pd.DataFrame, row: Row, size: str) -> pd.DataFrame:
    return runs[(runs["sweep"] == row["level"]) & (pd.to_numeric(runs[size], errors="coerce") == row[size])]
