"""Scaling laws, Chinchilla approach 3 as replicated by Epoch AI (2024):

    log L = LSE(a − α·log N, b − β·log D, e),   i.e.   L = E + A/N^α + B/D^β

(E = e^e, A = e^a, B = e^b), fitted by minimising a Huber loss (δ = 1e-3) of the log-loss
residuals with L-BFGS-B from a grid of starting points. Intervals (`interval`): "pairs", the
default, resamples runs with replacement and refits (see _pairs_bootstrap); "residual" refits
the fixed design to the fitted curve plus resampled residuals (see _bootstrap). In coverage
simulations (benchmarks/bench_estimators.py scaling; docs/analysis.md) pairs covered 0.96 on
Chinchilla-like data with heteroscedastic noise and unequal runs per compute budget, residual
0.93 (one parameter down to 0.91); both 0.96 on a 7-size single-seed sweep, where pairs is
wider. When every run has the same D, the B/D^β term is dropped (it is absorbed into E).

Points: per parametrization (and sweep), at each (N, D) the finished runs of the swept
hyperparameter value with the best mean loss (the tuned point of that size); diverged runs
never win, failed runs are excluded.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.optimize import minimize

from trainer.config import UserError

from . import frames
from .results import Result, optional
from .stats import MIN_VALID_REPLICATES, one_blas_thread, percentile_ci

DELTA = 1e-3
GRID = {"a": np.arange(0, 30, 5.0), "alpha": np.arange(0, 2.5, 0.5), "e": np.arange(-1, 1.5, 0.5)}
N_STARTS = 5          # L-BFGS-B runs from the best grid points
EXPONENT_BOUNDS = (0.0, 10.0)


def _fitted(fit: "ScalingFit", value: Any) -> bool:
    return fit.exact_fit is not None


def _with_interval(fit: "ScalingFit", value: Any) -> bool:
    return fit.exact_fit is False and value is not None


@dataclass(frozen=True, kw_only=True)
class ScalingPoint(Result):
    """The losses of one cell (N, D) over its runs."""
    N: float
    D: float | None               # None when tokens do not vary
    loss_mean: float
    loss_std: float | None
    n: int


@dataclass(frozen=True, kw_only=True)
class ScalingFit(Result):
    """L = E + A/N^alpha (+ B/D^beta) of one parametrization; no law (a note) below 3 sizes."""
    group: dict[str, Any]
    label: str
    n_points: int
    n_sizes: int
    N_range: list[float] | None
    points: list[ScalingPoint]    # per (N, D)
    note: str | None = optional()
    exact_fit: bool | None = optional()   # as many cells as parameters: no interval
    E: float | None = optional(_fitted)
    A: float | None = optional(_fitted)
    alpha: float | None = optional(_fitted)
    B: float | None = optional()           # B and beta: only when tokens vary
    beta: float | None = optional()
    residual_rms: float | None = optional(_fitted)   # in log loss
    E_ci: list[float | None] | None = optional(_with_interval)
    A_ci: list[float | None] | None = optional(_with_interval)
    alpha_ci: list[float | None] | None = optional(_with_interval)
    B_ci: list[float | None] | None = optional(_with_interval)
    beta_ci: list[float | None] | None = optional(_with_interval)


@dataclass(frozen=True, kw_only=True)
class ScalingResult(Result):
    analysis: str = "scaling"
    model: str
    method: str
    interval: str | None = optional()   # "pairs" or "residual" bootstrap (absent: a report from before the choice)
    loss: str
    selection: str
    n_boot: int
    ci_level: float
    tokens_vary: bool             # the law has the B/D^beta term
    treatment: dict[str, str]
    fits: list[ScalingFit]
    warnings: list[str]


class LSEModel:
    """The objective and its gradient. theta = (a, alpha, e) or (a, alpha, b, beta, e).

    Internally log N and log D are centred (a is then the log-term at the mean size), which
    decorrelates a from alpha and lets L-BFGS-B converge in a few dozen steps."""

    def __init__(self, logN: np.ndarray, logD: np.ndarray | None, logL: np.ndarray):
        self.mN = float(logN.mean())
        self.mD = float(logD.mean()) if logD is not None else 0.0
        self.xN = logN - self.mN
        self.xD = None if logD is None else logD - self.mD
        self.logL = logL

    def with_logL(self, logL: np.ndarray) -> "LSEModel":
        """The same design (N, D and their centring) with other losses: a bootstrap replicate."""
        other = copy.copy(self)
        other.logL = logL
        return other

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        t = np.array(theta, float)
        t[..., 0] -= t[..., 1] * self.mN
        if self.xD is not None:
            t[..., 2] -= t[..., 3] * self.mD
        return t

    def from_centred(self, t: np.ndarray) -> np.ndarray:
        theta = np.array(t, float)
        theta[..., 0] += theta[..., 1] * self.mN
        if self.xD is not None:
            theta[..., 2] += theta[..., 3] * self.mD
        return theta

    def terms(self, t: np.ndarray) -> np.ndarray:
        """(..., n_terms, n_points) log-terms for centred t of shape (..., n_params)."""
        t = np.asarray(t, float)
        parts = [t[..., 0:1] - t[..., 1:2] * self.xN]
        if self.xD is not None:
            parts.append(t[..., 2:3] - t[..., 3:4] * self.xD)
        parts.append(np.broadcast_to(t[..., -1:], parts[0].shape))
        return np.stack(parts, -2)

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        return _lse(self.terms(self.to_centred(theta)), axis=-2) - self.logL

    def objective(self, theta: np.ndarray) -> np.ndarray:
        """Σ Huber(residual) / δ, vectorised over leading axes of (uncentred) theta."""
        return _huber(self.residuals(theta)).sum(-1) / DELTA

    def _value_and_grad(self, t: np.ndarray) -> tuple[float, np.ndarray]:
        terms = self.terms(t)
        lse = _lse(terms, axis=0)
        r = lse - self.logL
        dr = np.clip(r, -DELTA, DELTA) / DELTA          # d Huber / d r, scaled
        w = np.exp(terms - lse)                          # d LSE / d term (softmax weights)
        grad = [(dr * w[0]).sum(), -(dr * w[0] * self.xN).sum()]
        if self.xD is not None:
            grad += [(dr * w[1]).sum(), -(dr * w[1] * self.xD).sum()]
        grad.append((dr * w[-1]).sum())
        return float(_huber(r).sum() / DELTA), np.array(grad)

    def minimise(self, start: np.ndarray) -> tuple[np.ndarray, float]:
        bounds = [(None, None), EXPONENT_BOUNDS] * (1 if self.xD is None else 2) + [(None, None)]
        res = minimize(self._value_and_grad, self.to_centred(start), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9})
        return self.from_centred(res.x), float(res.fun)


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """log-sum-exp; scipy.special.logsumexp is ~50x slower on these tiny arrays."""
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _huber(r: np.ndarray) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= DELTA, 0.5 * r ** 2, DELTA * (a - 0.5 * DELTA))


def start_grid(with_d: bool) -> np.ndarray:
    axes = [GRID["a"], GRID["alpha"]] + ([GRID["a"], GRID["alpha"]] if with_d else []) + [GRID["e"]]
    return np.array(list(itertools.product(*axes)))


def fit_lse(model: LSEModel, extra_starts: list[np.ndarray] = ()) -> np.ndarray:
    """Best of L-BFGS-B runs from the N_STARTS best points of the start grid (the grid is
    scored in one vectorised pass) and any extra starts."""
    with one_blas_thread():
        return _fit_lse(model, extra_starts)


def _fit_lse(model: LSEModel, extra_starts) -> np.ndarray:
    grid = start_grid(model.xD is not None)
    scores = np.concatenate([model.objective(chunk) for chunk in np.array_split(grid, max(1, len(grid) // 500))])
    starts = list(grid[np.argsort(scores)[:N_STARTS]]) + list(extra_starts)
    best, best_fun = None, np.inf
    for start in starts:
        theta, fun = model.minimise(start)
        if fun < best_fun:
            best, best_fun = theta, fun
    return best


INTERVALS = ("pairs", "residual")
INTERVAL_TEXT = {"pairs": "a pairs bootstrap (runs resampled with replacement, one L-BFGS-B refit per replicate)",
                 "residual": "a smoothed residual bootstrap on the fixed design (one L-BFGS-B refit per "
                             "replicate), t-scaled"}


def fit_scaling(trials: pd.DataFrame, *, size: str = "d_model", hp: str = "lr", loss: str = "final_val_loss",
                n_boot: int = 100, level: float = 0.95, seed: int = 0, interval: str = "pairs") -> ScalingResult:
    if interval not in INTERVALS:
        raise UserError(f"scaling-law fit: interval {interval!r} is not one of {', '.join(INTERVALS)}")
    frames.require_columns(trials, [size, "n_params", loss, "parametrization", "outcome"], "the scaling-law fit")
    runs = frames.grid_runs(trials)
    runs = runs[pd.to_numeric(runs["n_params"], errors="coerce") > 0]
    with_d = "tokens" in runs.columns and pd.to_numeric(runs["tokens"], errors="coerce").nunique() > 1
    cell = ["n_params"] + (["tokens"] if with_d else [])
    tuned = hp in runs.columns
    rng = np.random.default_rng(seed)
    warnings: list[str] = []
    fits = []
    for group, sub in frames.iter_groups(runs, frames.group_keys(runs)):
        points = frames.best_cells(sub, cell, hp, loss) if tuned else frames.usable(sub)
        fits.append(_fit_group(group, points, loss, with_d, n_boot, level, rng, warnings, interval))
    if not any(f.E is not None for f in fits):
        sizes = sorted(pd.to_numeric(runs["n_params"], errors="coerce").dropna().unique().tolist())
        raise UserError(f"the scaling-law fit needs finished runs at ≥ 3 model sizes per parametrization "
                        f"(n_params values here: {[int(s) for s in sizes][:10]})")
    return ScalingResult(model="L = E + A/N^alpha" + (" + B/D^beta" if with_d else ""),
                         method=f"Huber (delta=1e-3) on log-loss residuals, L-BFGS-B from a grid of starts; intervals "
                                f"from {INTERVAL_TEXT[interval]}", interval=interval,
                         loss=loss, selection=_selection(hp, tuned, with_d), n_boot=n_boot, ci_level=level,
                         tokens_vary=with_d,
                         treatment={"diverged": "never the tuned point (mean loss +inf); excluded from the fit",
                                    "failed": "excluded"}, fits=fits, warnings=warnings)


def _selection(hp: str, tuned: bool, with_d: bool) -> str:
    """What the points are: the tuned runs of each cell, or every run when there is no hp to tune."""
    where = "each (N, D) cell" if with_d else "each model size (n_params)"
    if tuned:
        return f"finished grid runs at the best {hp} of {where}"
    return f"every finished grid run at {where} (no {hp} column, so no tuned point)"


def _fit_group(group: dict, points: pd.DataFrame, loss: str, with_d: bool, n_boot: int,
               level: float, rng: np.random.Generator, warnings: list[str], interval: str = "pairs") -> ScalingFit:
    label = frames.group_label(group)
    L = pd.to_numeric(points[loss], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(L) & (L > 0)              # diverged runs have no loss
    points, L = points[keep], L[keep]
    N = pd.to_numeric(points["n_params"], errors="coerce").to_numpy(dtype=float)
    D = pd.to_numeric(points["tokens"], errors="coerce").to_numpy(dtype=float) if with_d else None
    n_sizes = int(np.unique(N).size)
    n_cells = np.unique(np.stack([N] + ([D] if with_d else []), 1), axis=0).shape[0]
    out = {"group": group, "label": label, "n_points": len(points), "n_sizes": n_sizes,
           "N_range": [float(N.min()), float(N.max())] if len(N) else None,
           "points": _points(N, D, L)}
    if n_sizes < 3 or (with_d and n_cells < 5):
        out["note"] = f"{n_sizes} model size(s): a fit needs ≥ 3" + (" and ≥ 5 (N, D) cells" if with_d else "")
        if n_sizes >= 2:
            warnings.append(f"{label}: {out['note']}")
        return ScalingFit(**out)
    # As many cells as parameters: the curve passes through every cell, and a bootstrap
    # yields intervals that say nothing about the law (zero width with one run per cell).
    out["exact_fit"] = n_cells == (5 if with_d else 3)
    if out["exact_fit"]:
        what = "5 (N, D) cells for 5 parameters (E, A, α, B, β)" if with_d else "3 sizes for 3 parameters (E, A, α)"
        warnings.append(f"{label}: {what}: the fit is exact, so no interval is given; add "
                        f"{'cells' if with_d else 'sizes'}")
    model = LSEModel(np.log(N), None if D is None else np.log(D), np.log(L))
    theta = fit_lse(model)
    out.update(_named(theta, with_d))
    out["residual_rms"] = float(np.sqrt(np.mean(model.residuals(theta) ** 2)))
    if not out["exact_fit"]:
        out.update(_intervals(model, theta, with_d, n_boot, level, rng, label, warnings, interval))
    if np.isclose(theta[1], EXPONENT_BOUNDS[0]) or np.isclose(theta[1], EXPONENT_BOUNDS[1]):
        warnings.append(f"{label}: α hit its bound {theta[1]:g}: E and A are not identified by these sizes")
    return ScalingFit(**out)


def _intervals(model: LSEModel, theta: np.ndarray, with_d: bool, n_boot: int, level: float,
               rng: np.random.Generator, label: str, warnings: list[str], interval: str = "pairs") -> dict:
    """Percentile intervals of the bootstrap refits; null (and a warning) where they cannot be
    formed, never a zero-width interval presented as one."""
    if interval == "pairs":
        boot, dropped = _pairs_bootstrap(model, theta, n_boot, rng)
        if dropped:
            warnings.append(f"{label}: {dropped} of {n_boot} pairs-bootstrap replicates drew fewer than "
                            f"{theta.size} distinct cells (or < 3 sizes) and were left out"
                            + ("; with this few runs use interval='residual'" if dropped > n_boot // 4 else ""))
    else:
        boot = _bootstrap(model, theta, n_boot, level, rng)
    out, flat = {}, []
    for name, values in _named_arrays(boot, with_d).items():
        ci = percentile_ci(values, level)
        # Refits of noise-free data differ only by the optimiser's tolerance (~1e-12).
        if ci[0] is not None and np.isclose(ci[0], ci[1], rtol=1e-9, atol=0):
            ci = [None, None]
            flat.append(name)
        out[name + "_ci"] = ci
    if flat:
        warnings.append(f"{label}: the bootstrap refits of {', '.join(flat)} do not vary (the points lie on "
                        "the fitted curve): no interval")
    if n_boot < MIN_VALID_REPLICATES:
        warnings.append(f"{label}: n_boot={n_boot} bootstrap replicates are too few for an interval "
                        f"(need ≥ {MIN_VALID_REPLICATES})")
    return out


def _pairs_bootstrap(model: LSEModel, theta: np.ndarray, n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(n_boot, n_params) refits to runs resampled with replacement (pairs: (N, D, L) together),
    and how many replicates were left out (NaN rows) for drawing too few distinct cells or
    < 3 sizes to identify the law. Unlike the residual bootstrap it does not assume the same
    noise in every cell (noise shrinks with compute; budgets hold unequal numbers of runs);
    with 4-5 runs in all, most draws are left out and the residual bootstrap is the better choice."""
    n, p = model.logL.size, theta.size
    design = np.stack([model.xN] + ([model.xD] if model.xD is not None else []), 1)
    boot = np.full((n_boot, p), np.nan)
    dropped = 0
    with one_blas_thread():
        for i in range(n_boot):
            idx = rng.integers(0, n, n)
            cells = np.unique(design[idx], axis=0)
            if cells.shape[0] < p or np.unique(design[idx, 0]).size < 3:
                dropped += 1
                continue
            sub = copy.copy(model)
            sub.xN, sub.logL = model.xN[idx], model.logL[idx]
            if model.xD is not None:
                sub.xD = model.xD[idx]
            boot[i] = sub.minimise(theta)[0]
    return boot, dropped


def _bootstrap(model: LSEModel, theta: np.ndarray, n_boot: int, level: float,
               rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_params) refits to the fitted curve plus resampled log-loss errors (interval
    "residual").

    N and D stay fixed by the sweep's design, so every replicate is identified even with very
    few runs; it assumes what the fit assumes, i.i.d. noise on log L, and spreads every
    residual over every cell. Errors are the residuals scaled by sqrt(n/(n−p))
    (residuals are shorter than the errors they estimate), smoothed (see _smoothed_draws), and
    each refit's deviation is widened by t/z (see _t_widening)."""
    n, p = model.logL.size, theta.size
    r = model.residuals(theta)                   # fitted − observed
    errors = _smoothed_draws(-r * np.sqrt(n / (n - p)), (n_boot, n), rng)
    with one_blas_thread():
        boot = np.array([model.with_logL(model.logL + r + e).minimise(theta)[0] for e in errors])
    return theta + _t_widening(n - p, level) * (boot.reshape(n_boot, p) - theta)


def _smoothed_draws(errors: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Errors resampled with replacement plus Gaussian kernel noise (bandwidth sd·n^(−1/5),
    the normal-reference rule), shrunk back to the errors' variance: a smoothed bootstrap.
    With δ = 1e-3 the Huber fit is close to least absolute deviations, whose residuals pile up
    at zero (about p of them vanish); resampled as they are, they make the refits too stable
    (De Angelis, Hall & Young 1993). In simulated 6-size x 3-seed sweeps the refits' spread
    was 85-89% of the estimator's true spread unsmoothed, 89-94% smoothed."""
    spread = errors.size ** -0.2                 # bandwidth / sd
    draws = rng.choice(errors, shape) + rng.normal(0.0, spread * errors.std(), shape)
    return errors.mean() + (draws - errors.mean()) / np.sqrt(1 + spread ** 2)


def _t_widening(dof: int, level: float) -> float:
    """A percentile interval has the width of a normal-quantile interval; with the noise
    estimated from dof = n − p residuals a t quantile is right (for least squares with Gaussian
    noise this makes the bootstrap interval the textbook t-interval)."""
    q = (1 + level) / 2
    return float(sps.t.ppf(q, dof) / sps.norm.ppf(q))


def _named(theta: np.ndarray, with_d: bool) -> dict:
    return {k: float(v[0]) for k, v in _named_arrays(theta[None, :], with_d).items()}


def _named_arrays(theta: np.ndarray, with_d: bool) -> dict[str, np.ndarray]:
    out = {"E": np.exp(theta[:, -1]), "A": np.exp(theta[:, 0]), "alpha": theta[:, 1]}
    if with_d:
        out.update(B=np.exp(theta[:, 2]), beta=theta[:, 3])
    return out


def predict(fit: ScalingFit, N: np.ndarray, D: np.ndarray | None = None) -> np.ndarray:
    """The fitted law at N (and D)."""
    out = fit.E + fit.A / np.asarray(N, float) ** fit.alpha
    if fit.B is not None and D is not None:
        out = out + fit.B / np.asarray(D, float) ** fit.beta
    return out


def _points(N: np.ndarray, D: np.ndarray | None, L: np.ndarray) -> list[ScalingPoint]:
    frame = pd.DataFrame({"N": N, "D": D if D is not None else np.nan, "L": L})
    agg = frame.groupby(["N", "D"], dropna=False)["L"].agg(["mean", "std", "count"]).reset_index()
    return [ScalingPoint(N=float(r.N), D=None if np.isnan(r.D) else float(r.D), loss_mean=float(r["mean"]),
                         loss_std=None if np.isnan(r["std"]) else float(r["std"]), n=int(r["count"]))
            for _, r in agg.iterrows()]
