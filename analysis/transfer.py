"""Hyperparameter transfer: the optimum of loss vs log2(hp) per parametrization and size, the
transfer exponent γ (log η* = c + γ·log size), the drift of the optimum in grid steps, and the
LR sensitivity of Wortsman et al. (2023).

The optimum of a curve (estimator "asymmetric", the default) is the x0 of the least-squares fit
L = c + a·f(log2 hp − x0), a > 0, to the seed-mean losses of the best grid point ± k points
(widened until it holds ≥ 4 finite points), over two families of asymmetric bowls f: the
exponential (e^{s·u} − 1 − s·u)/s² (s = 0: a parabola) and two half-parabolas whose curvatures
differ by a factor r; the family member, s or r, is chosen by the fit too (from a window of
only 4 points, only shapes at least as steep above the optimum as below: s ≥ 0, r ≥ 1). Loss curves are
steeper on the high-LR side, and a symmetric parabola through a wide window puts its vertex
on the flatter side: up to 0.8 grid steps off on quickstart-like grids, where this model is
within 0.15 (benchmarks/bench_estimators.py; docs/analysis.md). With 3 finite points it
falls back to the parabola through them; estimator "parabola" is the vertex of a parabola
through best ± k. The optimum is kept inside the window; a window where no convex bowl fits
falls back to the best grid point. Intervals come from a bootstrap over seeds (seeds
resampled per grid point), and γ's from the same replicates, fitted per replicate.
"""
from __future__ import annotations

import math
import warnings as pywarnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from trainer.config import UserError

from . import frames
from .results import Result, optional
from .stats import batched_slopes, bootstrap_means, finite_mean, one_blas_thread, pad, percentile_ci, t_interval


@dataclass(frozen=True, kw_only=True)
class TransferPoint(Result):
    """One grid value of the swept hp: the mean loss over its seeds."""
    log2_hp: float
    hp: float
    loss_mean: float | None       # of the finite seeds; None when every seed diverged (or none has a loss)
    loss_sem: float | None
    n: int
    n_diverged: int


@dataclass(frozen=True, kw_only=True)
class TransferCurve(Result):
    """Loss vs log2(hp) of one parametrization at one size, and its parabola optimum."""
    group: dict[str, Any]
    label: str
    size: float
    n_runs: int
    n_seeds: int                  # most runs at one grid point
    n_diverged: int
    n_nan_loss: int               # finished runs without a loss value, left out
    points: list[TransferPoint]   # per grid value
    log2_opt: float | None
    log2_opt_ci: list[float | None]
    opt: float | None
    opt_ci: list[float | None]
    loss_at_opt: float | None
    best_grid_log2: float | None  # the bare argmin of the grid
    window_log2: list[float] | None   # range of the points the optimum was fitted to
    n_window: int
    at_edge: bool | None          # best grid value is the first or last tried: the optimum is a bound
    clipped: bool | None          # vertex outside the window, clipped to it
    convex: bool | None           # False: not convex, the optimum is the best grid point
    sensitivity: float | None
    sensitivity_ci: list[float | None]


@dataclass(frozen=True, kw_only=True)
class TransferGroup(Result):
    """The transfer exponent γ of one parametrization: log2 η* = intercept_log2 + γ·log2(size)."""
    group: dict[str, Any]
    label: str
    sizes: list[float]            # sizes with an optimum
    log2_opt: list[float]
    gamma: float | None
    gamma_ci: list[float | None]
    intercept_log2: float | None
    ci_method: str | None
    drift_steps: float | None     # change of log2 η*, smallest to largest size, in grid steps
    drift_steps_ci: list[float | None]
    grid_step_log2: float | None
    drift_by_size: dict[str, float | None]
    note: str | None = optional()  # why there is no γ


@dataclass(frozen=True, kw_only=True)
class TransferResult(Result):
    analysis: str = "transfer"
    hp: str
    size: str
    loss: str
    k: int                        # window: best grid point ± k
    estimator: str | None = optional()   # "asymmetric" or "parabola" (absent: a report from before the choice)
    n_boot: int
    ci_level: float
    init_loss: float              # ℓ_init of the sensitivity
    sensitivity_range_log2: list[float] | None
    group_keys: list[str]
    outcomes: dict[str, int]
    treatment: dict[str, str]
    curves: list[TransferCurve]
    groups: list[TransferGroup]
    warnings: list[str]


@dataclass
class OptimumFit:
    vertex: np.ndarray      # (B,) log2 optimum
    loss: np.ndarray        # (B,) fitted loss at the vertex
    best: np.ndarray        # (B,) index of the best grid point
    window: np.ndarray      # (B, 2) log2 range of the points used
    n_used: np.ndarray      # (B,)
    clipped: np.ndarray     # (B,) vertex outside the window (clipped to it)
    convex: np.ndarray      # (B,)


def _window(means: np.ndarray, k: int, min_points: int, finite_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best finite grid point, and the points within k of it, widened until it
    holds `min_points` finite ones (the fewest the estimator needs). A row with fewer finite
    points takes every point, unless `finite_only`."""
    G = means.shape[1]
    finite = np.isfinite(means)
    best = np.argmin(np.where(finite, means, np.inf), axis=1)
    dist = np.abs(np.arange(G)[None, :] - best[:, None]).astype(float)
    dist[~finite] = np.inf
    nth = np.sort(dist, axis=1)[:, min(min_points - 1, G - 1)]
    use = dist <= np.maximum(k, nth)[:, None]
    return best, (use & finite) if finite_only else use


def parabola_optima(x: np.ndarray, means: np.ndarray, k: int) -> OptimumFit:
    """Vertex of the parabola through the points around each row's minimum. x: (G,) sorted
    log2 grid; means: (B, G) with +inf for all-diverged points and NaN for absent ones."""
    B, G = means.shape
    best, use = _window(means, k, min_points=3, finite_only=False)
    n_used = use.sum(1)
    xm = x.mean()
    xc = np.where(use, x[None, :] - xm, 0.0)
    yc = np.where(use, means, 0.0)
    powers = [(xc ** p * use).sum(1) for p in range(5)]
    A = np.stack([np.stack([powers[4], powers[3], powers[2]], -1),
                  np.stack([powers[3], powers[2], powers[1]], -1),
                  np.stack([powers[2], powers[1], powers[0]], -1)], -2)
    rhs = np.stack([(xc ** 2 * yc).sum(1), (xc * yc).sum(1), yc.sum(1)], -1)
    ok = n_used >= 3
    coef = np.full((B, 3), np.nan)
    if ok.any():
        coef[ok] = np.linalg.solve(A[ok], rhs[ok][..., None])[..., 0]
    a, b, c = coef.T
    convex = ok & (a > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vertex = np.where(convex, -b / (2 * a), x[best] - xm)
    lo = np.where(use, xc, np.inf).min(1)
    hi = np.where(use, xc, -np.inf).max(1)
    clipped = convex & ((vertex < lo) | (vertex > hi))
    vertex = np.clip(vertex, lo, hi)
    fitted = np.where(convex, a * vertex ** 2 + b * vertex + c, means[np.arange(B), best])
    vertex = np.where(ok, vertex + xm, np.nan)
    return OptimumFit(vertex, np.where(ok, fitted, np.nan), best, np.stack([lo + xm, hi + xm], -1),
                      n_used, clipped, convex)


# What theory says γ should be, per (swept hyperparameter, size column): (figure title, report text).
PREDICTED_GAMMA = {
    ("lr", "d_model"): ("µP predicts γ ≈ 0", "µP predicts ≈ 0, SP with Adam ≈ −1"),
    ("lr", "n_layers"): ("CompleteP predicts γ ≈ 0", "CompleteP's depth rule predicts ≈ 0 (Dey et al. 2025)"),
    ("weight_decay", "d_model"): (
        "constant ηλ predicts γ ≈ +1 (lr), 0 (lr_wd)",
        "a constant AdamW timescale 1/(η·λ) predicts ≈ +1 for width_recipe lr (λ fixed, hidden η ∝ 1/m) and ≈ 0 "
        "for lr_wd, which scales λ ∝ m itself (Wang & Aitchison 2024)"),
}

ESTIMATORS = ("asymmetric", "parabola")
EXP_S = np.linspace(-3.0, 3.0, 15)          # s of (e^{s·u} − 1 − s·u)/s², u in log2 units; s < 0: steep below
LOG_R = np.linspace(-np.log(8), np.log(8), 15)   # half-parabolas: the upper arm r = e^LOG_R times as curved
# A window of 4 points leaves the 4-parameter bowl no residual: it cannot tell a bowl from its
# mirror image, and the mirror shapes (steeper below the optimum) let it put a deep minimum
# between two points (quickstart sp, d = 256: 0.10 below every measured loss). There only the
# shapes loss-vs-log-η curves have are fitted: at least as steep above the optimum (s ≥ 0, r ≥ 1).
MIRROR_NEEDS_POINTS = 5
X0_PER_STEP = 10                            # candidate optima per grid step, before refinement
REFINE = ((7, 1.0), (7, 1.0))               # refinement rounds: points per axis, half-width in the previous spacing


def _bowl(u: np.ndarray, half: np.ndarray | bool, p: np.ndarray) -> np.ndarray:
    """An asymmetric bowl at u: 0 with slope 0 at u = 0. half: False = the exponential
    (e^{p·u} − 1 − p·u)/p², True = half-parabolas u²/2·e^{±p/2} (the upper arm e^p times as curved)."""
    if half is True:
        return u ** 2 / 2 * np.exp(np.where(u > 0, p, -p) / 2)
    pu = p * u
    if half is False:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.where(np.abs(pu) > 1e-6, (np.expm1(pu) - pu) / p ** 2, u ** 2 / 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exp = np.where(np.abs(pu) > 1e-6, (np.expm1(pu) - pu) / p ** 2, u ** 2 / 2)
    return np.where(half, u ** 2 / 2 * np.exp(np.where(u > 0, p, -p) / 2), exp)


def _ls(F: np.ndarray, w: np.ndarray, yc: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of centred y on c + a·F over the last axis: (sse, a, mean of F)."""
    mf = (w * F).sum(-1) / n
    Fc = F - mf[..., None]
    var_f = (w * Fc ** 2).sum(-1)
    cov = (w * Fc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = cov / var_f
        sse = (w * yc ** 2).sum(-1) - a * cov
    return np.where((a > 0) & (var_f > 0), sse, np.inf), a, mf


def asymmetric_optima(x: np.ndarray, means: np.ndarray, k: int) -> OptimumFit:
    """Optimum x0 of the best asymmetric bowl c + a·f(x − x0) (a > 0) through the points around
    each row's minimum, by least squares: first over a grid of bowls and candidate x0 in the
    window (the sums over grid points are matrix products against the bowls tabulated once,
    so a bootstrap's replicates cost a few BLAS calls), then on finer grids around the best.
    x: (G,) sorted log2 grid; means: (B, G) with +inf for all-diverged points and NaN for
    absent ones."""
    with one_blas_thread():
        return _asymmetric_optima(x, means, k)


def _asymmetric_optima(x: np.ndarray, means: np.ndarray, k: int, chunk: int = 512) -> OptimumFit:
    """asymmetric_optima without its BLAS thread limit."""
    B, G = means.shape
    best, use = _window(means, k, min_points=4, finite_only=True)
    n_used = use.sum(1)
    lo = np.where(use, x, np.inf).min(1)
    hi = np.where(use, x, -np.inf).max(1)
    w = use.astype(float)
    n = np.maximum(w.sum(1), 1)
    y = np.where(use, means, 0.0)
    ybar = y.sum(1) / n
    yc = np.where(use, y - ybar[:, None], 0.0)
    # coarse: every (bowl, x0) at once
    dx = (float(np.median(np.diff(x))) if G > 1 else 1.0) / X0_PER_STEP
    x0 = np.arange(x[0], x[-1] + dx / 2, dx)
    half = np.repeat([False, True], [EXP_S.size, LOG_R.size])
    par = np.concatenate([EXP_S, LOG_R])
    F = _bowl(x[None, None, :] - x0[None, :, None], half[:, None, None], par[:, None, None])   # (S, X, G)
    cols_x0 = np.tile(x0, par.size)
    cols_shape = np.repeat(np.arange(par.size), x0.size)
    F = F.reshape(-1, G).T
    F2 = F ** 2
    inside = (x0[None, :] >= lo[:, None] - 1e-9) & (x0[None, :] <= hi[:, None] + 1e-9)     # (B, X)
    coarse = np.full((B, par.size, x0.size), np.inf)
    for s in range(0, B, chunk):
        sl = slice(s, s + chunk)
        sf, sff, sfy = w[sl] @ F, w[sl] @ F2, yc[sl] @ F
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            var_f = sff - sf ** 2 / n[sl, None]
            a = sfy / var_f
            sse = (yc[sl] ** 2).sum(1)[:, None] - a * sfy
        sse = np.where((a > 0) & (var_f > 0), sse, np.inf).reshape(-1, par.size, x0.size)
        coarse[sl] = np.where(inside[sl, None, :], sse, np.inf)
    exact = n_used < MIRROR_NEEDS_POINTS
    coarse[np.ix_(exact, par < 0, np.arange(x0.size))] = np.inf
    # refine the best bowl of each family, keep the better
    lo_r, hi_r = np.where(n_used > 0, lo, x[0]), np.where(n_used > 0, hi, x[-1])   # rows without a window: any
    cols = np.argsort(~use, axis=1, kind="stable")[:, :max(1, int(n_used.max()))]   # the window's points first
    xw, ww, ycw = x[cols], np.take_along_axis(w, cols, 1), np.take_along_axis(yc, cols, 1)
    fit = [_refine(xw, ww, ycw, n, lo_r, hi_r, coarse[:, half == h], par[half == h], x0, h,
                   p_lo=np.where(exact, 0.0, par[half == h][0])) for h in (False, True)]
    take = fit[1][0] < fit[0][0]
    cur_sse, x0_c, cur_a, cur_mf = (np.where(take, b1, b0) for b0, b1 in zip(*fit))
    has, convex = n_used >= 4, np.isfinite(cur_sse) & np.isfinite(x0_c)
    good = has & convex
    vertex = np.where(good, x0_c, x[best])
    with np.errstate(invalid="ignore"):
        loss = np.where(good, ybar - cur_a * cur_mf, means[np.arange(B), best])
    clipped = good & ((vertex <= lo + 1e-9) | (vertex >= hi - 1e-9))
    out = OptimumFit(vertex, loss, best, np.stack([lo, hi], -1), n_used, clipped, good)
    few = ~has
    if few.any():                                                # 3 finite points: the parabola through them
        with np.errstate(invalid="ignore"):                      # rows without a finite point: NaN
            p = parabola_optima(x, means[few], 1)
        for name in ("vertex", "loss", "window", "n_used", "clipped", "convex"):
            getattr(out, name)[few] = getattr(p, name)
    return out


def _refine(x, w, yc, n, lo, hi, coarse, par, x0, half: bool, p_lo: np.ndarray):
    """The best bowl of one family (coarse: (B, n_par, X) sse) refined on finer grids of its
    parameter and x0 around the coarse best: (sse, x0, a, mean of f) per row. x, w, yc: (B, W),
    each row's window points; p_lo: per row, the lowest shape parameter allowed."""
    B = coarse.shape[0]
    j = np.argmin(coarse.reshape(B, -1), axis=1)
    jp, jx = np.unravel_index(j, coarse.shape[1:])
    p_c, x0_c = par[jp], x0[jx]
    p_step, dx = par[1] - par[0], x0[1] - x0[0] if x0.size > 1 else 1.0
    cur = [np.full(B, np.inf), x0_c, np.full(B, np.nan), np.full(B, np.nan)]
    rows = np.arange(B)
    for points, width in REFINE:
        t = np.linspace(-width, width, points)
        P = np.clip(p_c[:, None, None] + p_step * t[None, :, None], p_lo[:, None, None], par[-1])   # (B, P, 1)
        X0 = np.clip(x0_c[:, None, None] + dx * t[None, None, :], lo[:, None, None], hi[:, None, None])
        F = _bowl(x[:, None, None, :] - X0[..., None], half, P[..., None])                   # (B, P, X, W)
        sse, a, mf = _ls(F, w[:, None, None, :], yc[:, None, None, :], n[:, None, None])
        flat = sse.reshape(B, -1)
        j = np.argmin(flat, axis=1)
        jp, jx = np.unravel_index(j, sse.shape[1:])
        better = flat[rows, j] <= cur[0]
        p_c = np.where(better, P[rows, jp, 0], p_c)
        x0_c = np.where(better, X0[rows, 0, jx], x0_c)
        new = [flat[rows, j], x0_c, a[rows, jp, jx], mf[rows, jp, jx]]
        cur = [np.where(better, nv, cv) for nv, cv in zip(new, cur)]
        p_step, dx = p_step * width * 2 / (points - 1), dx * width * 2 / (points - 1)
    return cur


def optima(x: np.ndarray, means: np.ndarray, k: int, estimator: str) -> OptimumFit:
    """The optimum of each row by the named estimator (ESTIMATORS)."""
    return asymmetric_optima(x, means, k) if estimator == "asymmetric" else parabola_optima(x, means, k)


@dataclass
class Curve:
    group: dict
    size: float
    x: np.ndarray                 # sorted unique log2(hp)
    samples: list[np.ndarray]     # per grid point: loss per run (inf = diverged)
    n_nan: int


def fit_transfer(trials: pd.DataFrame, *, hp: str = "lr", size: str = "d_model", loss: str = "final_val_loss",
                 k: int = 2, estimator: str = "asymmetric", n_boot: int = 200, level: float = 0.95, seed: int = 0,
                 init_loss: float | None = None, hp_range: tuple[float, float] | None = None) -> TransferResult:
    if k < 1:
        raise UserError(f"transfer fit: window half-width k={k} must be ≥ 1 (the parabola needs ≥ 3 points)")
    if estimator not in ESTIMATORS:
        raise UserError(f"transfer fit: estimator {estimator!r} is not one of {', '.join(ESTIMATORS)}")
    frames.require_columns(trials, [hp, size, loss, "parametrization", "outcome"], "the transfer fit",
                           f"Pick the swept hyperparameter with --hp and the size column with --size.")
    frames.require_numeric(trials, [hp, size], "the transfer fit")
    warnings: list[str] = []
    runs = frames.grid_runs(trials)
    counts = frames.outcome_counts(runs)
    runs = frames.usable(runs)
    bad_hp = ~(pd.to_numeric(runs[hp], errors="coerce") > 0)
    if bad_hp.any():
        warnings.append(f"{int(bad_hp.sum())} run(s) with a missing or non-positive {hp} left out (log2 needs {hp} > 0)")
        runs = runs[~bad_hp]
    keys = _curve_keys(runs, hp, size, warnings)
    curves = _curves(runs, keys, hp, size, loss, warnings)
    if not curves:
        raise UserError(f"transfer fit: no finished or diverged grid runs with {hp}, {size} and {loss} "
                        f"(outcomes: {counts or 'no runs'})")
    curves = _swept_curves(curves, hp, warnings)
    rng = np.random.default_rng(seed)
    ell_init = _init_loss(runs, init_loss)
    lo_hi = hp_range and (math.log2(hp_range[0]), math.log2(hp_range[1]))
    lo_hi = lo_hi or _common_range(curves, warnings)
    fitted = [_fit_curve(c, k, estimator, n_boot, level, rng, ell_init, lo_hi, hp, size, warnings) for c in curves]
    one_seed = [f"{f['result'].label} {size}={_num(f['result'].size)}" for f in fitted
                if f["result"].n_seeds < 2]
    if one_seed:
        warnings.append(f"one seed per grid point in {len(one_seed)} curve(s) ({', '.join(one_seed[:6])}"
                        f"{', ...' if len(one_seed) > 6 else ''}): no seed bootstrap, so no interval for their optima")
    groups = _fit_groups(fitted, size, level, hp, warnings)
    if not any(g.gamma is not None for g in groups):
        sizes = sorted({_num(c.size) for c in curves})
        warnings.append(f"no parametrization has optima at ≥ 2 values of {size} (values: {sizes}): "
                        f"γ and the drift need a sweep over {size}")
    return TransferResult(hp=hp, size=size, loss=loss, k=k, estimator=estimator, n_boot=n_boot, ci_level=level, init_loss=ell_init,
                          sensitivity_range_log2=list(lo_hi) if lo_hi else None, group_keys=keys, outcomes=counts,
                          treatment=frames.TREATMENT, curves=[f["result"] for f in fitted], groups=groups,
                          warnings=warnings)


def _curve_keys(runs: pd.DataFrame, hp: str, size: str, warnings: list[str]) -> list[str]:
    """Group keys; params that vary inside a (group, size, hp, seed) cell split the curves."""
    keys = frames.group_keys(runs)
    cell = keys + [size, hp] + (["seed"] if "seed" in runs.columns else [])
    extra = frames.varying_within(runs, cell, frames.config_columns(runs))
    if extra:
        warnings.append(f"columns {extra} vary between runs at the same {hp}, {size} and seed: "
                        "curves are split by them")
    _warn_co_varying(runs, keys + extra, hp, size, warnings)
    return keys + extra


def _warn_co_varying(runs: pd.DataFrame, keys: list[str], hp: str, size: str, warnings: list[str]) -> None:
    """A config column that changes along a curve's hp axis (e.g. λ in a sqrt(η/λ) sweep)
    makes the curve something other than loss vs hp alone: say so."""
    config = [c for c in frames.config_columns(runs) if c not in keys + [hp, size, "seed"]
              and runs[c].nunique(dropna=False) > 1]
    if not config or runs.empty:
        return
    counts = runs.groupby(keys + [size], dropna=False)[config].nunique(dropna=False)
    for group, row in counts.iterrows():
        moving = [c for c in config if row[c] > 1]
        if moving:
            values = group if isinstance(group, tuple) else (group,)
            name = frames.group_label(dict(zip(keys, values)))
            warnings.append(f"{name} {size}={_num(values[-1])}: {moving} change along the {hp} axis, "
                            f"so its optimum is not that of {hp} alone")


def _curves(runs: pd.DataFrame, keys: list[str], hp: str, size: str, loss: str,
            warnings: list[str]) -> list[Curve]:
    curves = []
    for group, sub in frames.iter_groups(runs, keys):
        for width, part in sub.groupby(size, sort=True):
            values = frames.losses(part, loss)
            nan = np.isnan(values)
            if nan.any():
                warnings.append(f"{frames.group_label(group)} {size}={_num(width)}: {int(nan.sum())} finished "
                                f"run(s) without a {loss} value left out")
            part, values = part[~nan], values[~nan]
            log2 = np.log2(part[hp].to_numpy(dtype=float))
            grid = np.unique(log2)
            samples = [values[log2 == g] for g in grid]
            if grid.size:
                curves.append(Curve(group, float(width), grid, samples, int(nan.sum())))
    return curves


def _swept_curves(curves: list[Curve], hp: str, warnings: list[str]) -> list[Curve]:
    """The curves of groups that swept hp. A group that ran one value of hp at every size (a
    transfer of tuned values, a seed study) has no optimum to find: one line, not one per curve."""
    by_group: dict[str, list[Curve]] = {}
    for c in curves:
        by_group.setdefault(frames.group_label(c.group), []).append(c)
    unswept = sorted(label for label, cs in by_group.items() if all(c.x.size == 1 for c in cs))
    if len(unswept) == len(by_group):
        raise UserError(f"transfer fit: no group ran more than one value of {hp} at a size "
                        f"({len(unswept)} group(s) each ran one): nothing to find an optimum of")
    if unswept:
        warnings.append(f"{len(unswept)} group(s) ran one value of {hp} at each size and are left out of the "
                        f"transfer fit: {', '.join(unswept[:4])}{', ...' if len(unswept) > 4 else ''}")
    return [c for c in curves if frames.group_label(c.group) not in unswept]


def _init_loss(runs: pd.DataFrame, init_loss: float | None) -> float:
    """ℓ_init of the sensitivity: the loss of a uniform prediction, ln(vocab)."""
    if init_loss is not None:
        return float(init_loss)
    vocab = pd.to_numeric(runs.get("vocab_size", pd.Series(dtype=float)), errors="coerce").dropna()
    return math.log(float(vocab.iloc[0]) if len(vocab) and vocab.nunique() == 1 else 256.0)


def _common_range(curves: list[Curve], warnings: list[str]) -> tuple[float, float] | None:
    lo = max(float(c.x.min()) for c in curves if c.x.size)
    hi = min(float(c.x.max()) for c in curves if c.x.size)
    if lo >= hi:
        warnings.append("the curves' hp grids do not overlap: LR sensitivity is over each curve's own grid "
                        "and is not comparable between curves")
        return None
    return lo, hi


def _fit_curve(curve: Curve, k: int, estimator: str, n_boot: int, level: float, rng: np.random.Generator, ell_init: float,
               lo_hi, hp: str, size: str, warnings: list[str]) -> dict:
    name = f"{frames.group_label(curve.group)} {size}={_num(curve.size)}"
    padded, counts = pad(curve.samples)
    means = finite_mean(padded)
    n_diverged = int(sum(np.isinf(s).sum() for s in curve.samples))
    result = {"group": curve.group, "label": frames.group_label(curve.group), "size": curve.size,
              "n_runs": int(counts.sum()), "n_seeds": int(counts.max(initial=0)), "n_diverged": n_diverged,
              "n_nan_loss": curve.n_nan, "points": _points(curve, means)}
    n_finite = int(np.isfinite(means).sum())
    if n_finite < 3:
        why = "every run diverged" if n_finite == 0 and curve.x.size else f"only {n_finite} grid point(s) with a finite loss"
        warnings.append(f"{name}: {why}; no optimum (the parabola needs ≥ 3 points)")
        result.update(_empty_optimum())
        return {"curve": curve, "result": TransferCurve(**result), "boot_vertex": None, "boot_sens": None}
    point = optima(curve.x, means[None, :], k, estimator)
    boot = bootstrap_means(curve.samples, n_boot, rng)
    bfit = optima(curve.x, boot, k, estimator)
    one_seed = result["n_seeds"] < 2
    result.update(_optimum(curve, point, bfit, level, one_seed))
    sens, boot_sens = _sensitivity(curve.x, means, boot, ell_init, lo_hi)
    result["sensitivity"] = sens
    result["sensitivity_ci"] = [None, None] if one_seed else percentile_ci(boot_sens, level)
    _curve_warnings(name, result, hp, warnings)
    return {"curve": curve, "result": TransferCurve(**result), "boot_vertex": None if one_seed else bfit.vertex,
            "boot_sens": boot_sens}


def _points(curve: Curve, means: np.ndarray) -> list[TransferPoint]:
    out = []
    for x, s, m in zip(curve.x, curve.samples, means):
        finite = s[np.isfinite(s)]
        sem = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else None
        out.append(TransferPoint(log2_hp=float(x), hp=float(2 ** x), loss_mean=float(m), loss_sem=sem,
                                 n=int(s.size), n_diverged=int(np.isinf(s).sum())))
    return out


def _empty_optimum() -> dict:
    return {"log2_opt": None, "log2_opt_ci": [None, None], "opt": None, "opt_ci": [None, None],
            "loss_at_opt": None, "best_grid_log2": None, "window_log2": None, "n_window": 0,
            "at_edge": None, "clipped": None, "convex": None, "sensitivity": None, "sensitivity_ci": [None, None]}


def _optimum(curve: Curve, point: OptimumFit, boot: OptimumFit, level: float, one_seed: bool) -> dict:
    v = float(point.vertex[0])
    ci = [None, None] if one_seed else percentile_ci(boot.vertex, level)
    has_runs = [i for i, s in enumerate(curve.samples) if s.size]
    best = int(point.best[0])
    return {"log2_opt": v, "log2_opt_ci": ci, "opt": 2 ** v,
            "opt_ci": [None if c is None else 2 ** c for c in ci],
            "loss_at_opt": float(point.loss[0]), "best_grid_log2": float(curve.x[best]),
            "window_log2": point.window[0].tolist(), "n_window": int(point.n_used[0]),
            "at_edge": best in (has_runs[0], has_runs[-1]), "clipped": bool(point.clipped[0]),
            "convex": bool(point.convex[0])}


def _sensitivity(x: np.ndarray, means: np.ndarray, boot: np.ndarray, ell_init: float, lo_hi):
    """E_η[min(ℓ(η), ℓ_init) − ℓ*] over the grid points in the range (uniform in log η)."""
    inside = np.ones_like(x, bool) if lo_hi is None else (x >= lo_hi[0] - 1e-9) & (x <= lo_hi[1] + 1e-9)
    def value(m):
        m = m[..., inside]
        present = ~np.isnan(m)
        capped = np.where(present, np.minimum(m, ell_init), np.nan)
        best = np.nanmin(capped, axis=-1, keepdims=True)
        return np.nanmean(capped - best, axis=-1)
    with np.errstate(invalid="ignore"), pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows of failed replicates
        return float(value(means)), value(boot)


def _curve_warnings(name: str, result: dict, hp: str, warnings: list[str]) -> None:
    if result["at_edge"]:
        warnings.append(f"{name}: the best {hp} is at the edge of the grid ({hp}={2 ** result['best_grid_log2']:.3g}); "
                        "the optimum is a bound, not an estimate: extend the grid")
    if result["convex"] is False:
        warnings.append(f"{name}: loss is not convex around the best {hp}; optimum = the best grid point")


def _fit_groups(fitted: list[dict], size: str, level: float, hp: str, warnings: list[str]) -> list[TransferGroup]:
    out = []
    labels = sorted({frames.group_label(f["curve"].group) for f in fitted})
    for label in labels:
        members = [f for f in fitted if frames.group_label(f["curve"].group) == label]
        out.append(_fit_group(members, size, level, hp, warnings))
    return out


def _fit_group(members: list[dict], size: str, level: float, hp: str, warnings: list[str]) -> TransferGroup:
    group = members[0]["curve"].group
    label = frames.group_label(group)
    valid = [m for m in members if m["result"].log2_opt is not None]
    sizes = np.array([m["curve"].size for m in valid])
    opts = np.array([m["result"].log2_opt for m in valid])
    step = _grid_step(members)
    result = {"group": group, "label": label, "sizes": sizes.tolist(), "log2_opt": opts.tolist(),
              "gamma": None, "gamma_ci": [None, None], "intercept_log2": None, "ci_method": None,
              "drift_steps": None, "drift_steps_ci": [None, None], "grid_step_log2": step,
              "drift_by_size": {}}
    missing = [m["curve"].size for m in members if m["result"].log2_opt is None]
    if missing:
        warnings.append(f"{label}: no optimum at {size}={[_num(s) for s in missing]}; γ uses the other sizes")
    if sizes.size < 2:
        result["note"] = f"γ needs optima at ≥ 2 values of {size} (have {sizes.size})"
        if len(members) >= 2:
            warnings.append(f"{label}: {result['note']}")
        return TransferGroup(**result)
    lx = np.log2(sizes)
    fit = sps.linregress(lx, opts)
    result.update(gamma=float(fit.slope), intercept_log2=float(fit.intercept))
    base = opts[np.argmin(sizes)]
    result["drift_by_size"] = {_num(s): (o - base) / step if step else None for s, o in zip(sizes, opts)}
    result["drift_steps"] = (opts[np.argmax(sizes)] - base) / step if step else None
    boots = [m["boot_vertex"] for m in valid]
    if all(b is not None for b in boots):
        V = np.stack(boots, 1)                           # (B, n_sizes): replicates independent per size
        V = V[np.isfinite(V).all(1)]
        result["gamma_ci"] = percentile_ci(batched_slopes(lx, V)[0], level)
        if step:
            drift = (V[:, np.argmax(sizes)] - V[:, np.argmin(sizes)]) / step
            result["drift_steps_ci"] = percentile_ci(drift, level)
        result["ci_method"] = "bootstrap over seeds"
    elif sizes.size >= 3:
        result["gamma_ci"] = t_interval(float(fit.slope), float(fit.stderr), sizes.size - 2, level)
        result["ci_method"] = "OLS t-interval over sizes (one seed: no bootstrap)"
    return TransferGroup(**result)


def _grid_step(members: list[dict]) -> float | None:
    diffs = np.concatenate([np.diff(m["curve"].x) for m in members])
    return float(np.median(diffs)) if diffs.size else None


def _num(value):
    value = float(value)
    return int(value) if value.is_integer() else value
