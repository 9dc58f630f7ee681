"""Statistics shared by the fits: seed bootstraps, percentile intervals, line fits, JSON.

Bootstraps are vectorised over replicates (one numpy array of shape (n_boot, ...)), so a
fit's cost grows with the number of curves, not with n_boot x Python loops.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from .results import Result

MIN_VALID_REPLICATES = 10  # fewer valid bootstrap replicates than this: no interval


@dataclass(frozen=True, kw_only=True)
class LogLogFit(Result):
    """y = prefactor·x^exponent by OLS of log y on log x over runs (no interval below 3 runs)."""
    exponent: float | None
    exponent_ci: list[float | None]
    prefactor: float | None
    n_runs: int
    n_x: int                      # distinct x values; < 2: no fit
    ci_method: str | None


def one_blas_thread():
    """Fits that call BLAS on small arrays (L-BFGS-B on 3-5 element vectors, the transfer
    optimum's bowl tables) run ~10x slower with a multi-threaded BLAS on a busy machine.
    threadpoolctl (present with scikit-learn, an MLflow dependency) pins it to one thread;
    without it, run as is."""
    try:
        from threadpoolctl import threadpool_limits  # optional: see above
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def percentile_ci(samples: np.ndarray, level: float) -> list[float | None]:
    """Percentile interval of the finite samples, or [None, None] if there are too few."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < MIN_VALID_REPLICATES:
        return [None, None]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [float(lo), float(hi)]


def pad(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-point samples -> (G, S_max) array padded with NaN, and the counts."""
    counts = np.array([len(g) for g in groups], dtype=int)
    out = np.full((len(groups), max(1, counts.max(initial=0))), np.nan)
    for i, g in enumerate(groups):
        out[i, :len(g)] = g
    return out, counts


def finite_mean(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over the last axis of the finite values (inf values = diverged runs are left out);
    +inf where every present value is inf, NaN where nothing is present."""
    present = ~np.isnan(values) if mask is None else mask & ~np.isnan(values)
    finite = present & np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(-1)
    count = finite.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    mean = np.where(count == 0, np.inf, mean)
    return np.where(present.sum(-1) == 0, np.nan, mean)


def bootstrap_means(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, G) means of each point's samples resampled with replacement (seeds resampled
    per grid point, independently), with `finite_mean`'s treatment of inf.

    A plain bootstrap of n values has variance (n-1)/n of the mean's: a third too small with
    the 3 seeds sweeps usually have. Each replicate's deviation from the point mean is scaled
    by sqrt(n/(n-1)) to undo that (n = the point's finite values)."""
    padded, counts = pad(groups)
    G, S = padded.shape
    idx = (rng.random((n_boot, G, S)) * np.maximum(counts, 1)[None, :, None]).astype(int)
    values = np.take_along_axis(np.broadcast_to(padded, (n_boot, G, S)), idx, axis=2)
    mask = np.arange(S)[None, None, :] < counts[None, :, None]
    boot = finite_mean(values, mask)
    center = finite_mean(padded)
    n_finite = np.isfinite(padded).sum(1)
    scale = np.sqrt(n_finite / np.maximum(n_finite - 1, 1))
    both = np.isfinite(boot) & np.isfinite(center)[None, :]
    with np.errstate(invalid="ignore"):
        return np.where(both, center + scale * (boot - center), boot)


def batched_slopes(x: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS slope and intercept of each row of Y (NaN entries left out) against x."""
    w = np.isfinite(Y)
    n = w.sum(1)
    xw = np.where(w, x[None, :], 0.0)
    yw = np.where(w, Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = xw.sum(1) / n, yw.sum(1) / n
        dx = np.where(w, x[None, :] - mx[:, None], 0.0)
        slope = (dx * (yw - my[:, None] * w)).sum(1) / (dx ** 2).sum(1)
    slope = np.where(n >= 2, slope, np.nan)
    return slope, my - slope * mx


def t_interval(estimate: float, stderr: float, dof: int, level: float) -> list[float | None]:
    if dof < 1 or not np.isfinite(stderr):
        return [None, None]
    half = float(sps.t.ppf((1 + level) / 2, dof)) * stderr
    return [estimate - half, estimate + half]


def welch_contrast(groups: list[np.ndarray], weights: list[float], level: float) -> tuple[float | None, list]:
    """Σ wᵢ·mean(groupᵢ) with its Welch–Satterthwaite t-interval: each group's own variance, the
    degrees of freedom of the combined standard error. With two groups and weights (1, −1) this
    is Welch's two-sample interval. Null interval when a group has < 2 values or nothing varies
    (with the 2–8 seeds of a sweep, a seed bootstrap is too short: docs/analysis.md, measured coverage)."""
    groups = [np.asarray(g, float) for g in groups]
    if any(g.size == 0 for g in groups):
        return None, [None, None]
    estimate = float(sum(w * g.mean() for w, g in zip(weights, groups)))
    if any(g.size < 2 for g in groups):
        return estimate, [None, None]
    parts = np.array([w * w * g.var(ddof=1) / g.size for w, g in zip(weights, groups)])
    se2 = float(parts.sum())
    if se2 <= 0:
        return estimate, [None, None]
    dof = se2 ** 2 / float(sum(p * p / (g.size - 1) for p, g in zip(parts, groups) if p > 0))
    half = float(sps.t.ppf(0.5 + level / 2, dof)) * math.sqrt(se2)
    return estimate, [estimate - half, estimate + half]


def loglog_fit(x: np.ndarray, y: np.ndarray, level: float) -> LogLogFit:
    """Power law y = C·x^p by OLS of log y on log x over individual runs, with the OLS
    t-interval of p (pooled residuals: better calibrated than a bootstrap with the 2-5 seeds
    per width a sweep has). No interval with fewer than 3 runs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    n_runs, n_x = int(keep.sum()), int(np.unique(lx).size)
    if n_x < 2:
        return LogLogFit(exponent=None, exponent_ci=[None, None], prefactor=None, n_runs=n_runs, n_x=n_x, ci_method=None)
    fit = sps.linregress(lx, ly)
    ci, method = [None, None], None
    if n_runs >= 3:
        ci = t_interval(float(fit.slope), float(fit.stderr), n_runs - 2, level)
        method = "OLS t-interval of the log-log slope over runs"
    return LogLogFit(exponent=float(fit.slope), exponent_ci=ci, prefactor=float(math.exp(fit.intercept)),
                     n_runs=n_runs, n_x=n_x, ci_method=method)


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN and ±inf -> None."""
    if isinstance(obj, Result):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
