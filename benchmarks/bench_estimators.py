"""Bias, RMSE and interval coverage of the analysis estimators on synthetic data with a known truth.

transfer: the learning-rate optimum η* of loss-vs-log2(η) curves that are asymmetric (steeper on
the high-LR side), on grids as coarse as the quickstart's (4 points, step log2 3 ≈ 1.585).
Each simulated curve has 3 seeds per grid point; intervals are the report's: seeds resampled
per grid point (stats.bootstrap_means), the estimator re-run per replicate, percentile interval.

    python benchmarks/bench_estimators.py transfer [--curves 300] [--boot 200]

scaling: coverage of the scaling-law intervals (pairs vs residual bootstrap) on Chinchilla-like
data: IsoFLOP profiles at 9 compute budgets with unequal numbers of runs, L = E + A/N^α + B/D^β
(Epoch AI's fit to Chinchilla) times log-normal noise whose sd shrinks with compute.

The same for the single-seed 7-size sweep of tests/test_analysis_coverage.py.

    python benchmarks/bench_estimators.py scaling [--datasets 80] [--boot 100] [--only TITLE-PART]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats import finite_mean  # noqa: E402
from analysis.transfer import asymmetric_optima, parabola_optima  # noqa: E402

STEP = float(np.log2(3.0))       # the quickstart's grid: lr 1e-3, 3e-3, 1e-2, 3e-2
CURVATURE = 0.05                 # loss rise ≈ CURVATURE·u² near the optimum (u in log2 units)
MIN_LOSS, INIT_LOSS = 2.0, np.log(256)   # a run above the loss of a uniform prediction has diverged (+inf)


# ---- curve families: loss as a function of u = log2 η − log2 η* (minimum 0 at u = 0) ----------

def exp_family(s: float):
    """c + a·(e^{s·u} − 1 − s·u)/s²: quadratic near the optimum, exponential above it."""
    return lambda u: 2 * CURVATURE * (np.expm1(s * u) - s * u) / s ** 2


def half_parabolas(r: float):
    """Two half-parabolas, the high-LR arm r times as curved as the low one."""
    return lambda u: CURVATURE * np.where(u > 0, np.sqrt(r), 1 / np.sqrt(r)) * u ** 2


# The symmetric parabola (r = 1) is the edge of what the asymmetric estimator allows (it fits only
# bowls at least as steep above the optimum as below).
FAMILIES = {"parabola": half_parabolas(1.0),
            **{f"exp s={s:g}": exp_family(s) for s in (0.5, 1.0, 2.0)},
            **{f"half-par r={r:g}": half_parabolas(r) for r in (2.0, 4.0)}}


# ---- estimators: x (G,) sorted log2 grid, means (B, G) -> (B,) log2 optimum ---------------------

def est_parabola(k: int):
    return lambda x, m: parabola_optima(x, m, k).vertex


def est_argmin(x, m):
    return x[np.argmin(m, axis=1)]


def est_cubic(x, m):
    """Cubic through the 4 consecutive points around the minimum (the extra point on the side of
    the lower neighbour), its local minimum inside them."""
    B, G = m.shape
    best = np.argmin(m, axis=1)
    left = np.where(best > 0, m[np.arange(B), np.maximum(best - 1, 0)], np.inf)
    right = np.where(best < G - 1, m[np.arange(B), np.minimum(best + 1, G - 1)], np.inf)
    start = np.where(left < right, best - 2, best - 1)
    start = np.clip(start, 0, G - 4)
    idx = start[:, None] + np.arange(4)[None, :]
    xs = x[idx]
    ys = np.take_along_axis(m, idx, 1)
    xm = xs.mean(1, keepdims=True)
    V = np.stack([(xs - xm) ** p for p in (3, 2, 1, 0)], -1)
    c3, c2, c1, _ = np.linalg.solve(V, ys[..., None])[..., 0].T
    disc = c2 ** 2 - 3 * c3 * c1
    with np.errstate(invalid="ignore", divide="ignore"):
        r1 = (-c2 + np.sqrt(disc)) / (3 * c3)
        r2 = (-c2 - np.sqrt(disc)) / (3 * c3)
        curv1 = 6 * c3 * r1 + 2 * c2
        root = np.where(curv1 > 0, r1, r2)
        root = np.where(np.abs(c3) < 1e-12, -c1 / (2 * c2), root)
    ok = np.isfinite(root) & np.isfinite(ys).all(1)
    v = np.where(ok, root + xm[:, 0], x[best])
    return np.clip(v, xs[:, 0], xs[:, -1])


ESTIMATORS = {"asymmetric k=2": lambda x, m: asymmetric_optima(x, m, 2).vertex,
              "parabola k=2": est_parabola(2), "parabola k=1": est_parabola(1), "argmin": est_argmin,
              "cubic 4 points": est_cubic}


# ---- simulation ---------------------------------------------------------------------------------

def simulate(shape, n_grid: int, noise: float, estimators: dict, curves: int, n_boot: int, seeds: int,
             rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
    """(bias, RMSE, coverage) in grid steps per estimator. The optimum lies uniformly in the grid
    cell just below the middle of the grid (a cell away from the edges)."""
    x = np.arange(n_grid) * STEP
    cell = (n_grid - 2) // 2
    truth = (cell + rng.random(curves)) * STEP
    mean_loss = MIN_LOSS + shape(x[None, :] - truth[:, None])                # (curves, G)
    runs = mean_loss[:, :, None] + rng.normal(0.0, noise, (curves, n_grid, seeds))
    runs[runs > INIT_LOSS] = np.inf
    means = finite_mean(runs)
    boot_means = seed_bootstrap(runs, n_boot, rng)
    out = {}
    for name, est in estimators.items():
        err = (est(x, means) - truth) / STEP
        cover = np.nan
        if noise > 0:
            boot = est(x, boot_means.reshape(-1, n_grid)).reshape(n_boot, curves)
            lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
            cover = float(np.mean((lo <= truth) & (truth <= hi)))
        out[name] = (float(np.mean(err)), float(np.sqrt(np.mean(err ** 2))), cover)
    return out


def seed_bootstrap(runs: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, curves, G) replicate means: stats.bootstrap_means (seeds resampled per grid
    point, deviations scaled by sqrt(n/(n−1))) for every curve at once."""
    idx = rng.integers(0, runs.shape[-1], (n_boot,) + runs.shape)
    boot = finite_mean(np.take_along_axis(np.broadcast_to(runs, idx.shape), idx, axis=-1))
    center = finite_mean(runs)
    n = np.isfinite(runs).sum(-1)
    with np.errstate(invalid="ignore"):
        scaled = center + np.sqrt(n / np.maximum(n - 1, 1)) * (boot - center)
    return np.where(np.isfinite(boot) & np.isfinite(center), scaled, boot)


def bench_transfer(curves: int, n_boot: int, seeds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"transfer optimum: error in grid steps (step log2 3 = {STEP:.3f}), {curves} curves per row, "
          f"{seeds} seeds per grid point, {n_boot} bootstrap replicates; coverage of the 95% interval")
    print(f"{'family':<14}{'grid':>5}{'noise':>7}  {'estimator':<22}{'bias':>8}{'RMSE':>8}{'cover':>8}")
    worst: dict[str, float] = {}
    for fam, shape in FAMILIES.items():
        for n_grid in (4, 6):
            for noise in (0.0, 0.01, 0.03):
                res = simulate(shape, n_grid, noise, ESTIMATORS, curves, n_boot, seeds, rng)
                for name, (bias, rmse, cover) in res.items():
                    worst[name] = max(worst.get(name, 0.0), abs(bias))
                    cov = "   —" if np.isnan(cover) else f"{cover:8.3f}"
                    print(f"{fam:<14}{n_grid:>5}{noise:>7.2f}  {name:<22}{bias:>+8.3f}{rmse:>8.3f}{cov:>8}")
    print("\nlargest |bias| over the rows (grid steps):")
    for name, b in worst.items():
        print(f"  {name:<22}{b:.3f}")


# ---- scaling law ------------------------------------------------------------------------------

CHINCHILLA = {"E": 1.82, "A": 482.0, "alpha": 0.3478, "B": 2085.0, "beta": 0.3658}   # Besiroglu et al. 2024
BUDGETS = np.geomspace(6e18, 3e21, 9)                # FLOPs of the IsoFLOP profiles
RUNS_PER_BUDGET = (4, 7, 9, 11, 9, 7, 5, 4, 3)          # unequal, as in Chinchilla's profiles
NOISE_SD = (0.03, 0.006)                             # log-loss noise sd at the smallest and largest budget
STRONG_NOISE_SD = (0.1, 0.003)


def chinchilla_like(rng: np.random.Generator, noise_sd: tuple[float, float] = NOISE_SD):
    """Trials: N spread log-uniformly over ±1.2 decades around each budget's compute-optimal
    size, D = C/(6N), noise sd falling log-linearly with C from noise_sd[0] to noise_sd[1]."""
    rows = []
    t = CHINCHILLA
    for i, (C, k) in enumerate(zip(BUDGETS, RUNS_PER_BUDGET)):
        n_opt = (C / 6) ** 0.5
        N = n_opt * 10 ** np.sort(rng.uniform(-1.2, 1.2, k))
        D = C / (6 * N)
        sd = np.exp(np.interp(i, [0, len(BUDGETS) - 1], np.log(noise_sd)))
        L = (t["E"] + t["A"] / N ** t["alpha"] + t["B"] / D ** t["beta"]) * np.exp(rng.normal(0, sd, k))
        rows.append(pd.DataFrame({"n_params": N, "tokens": D, "final_val_loss": L}))
    frame = pd.concat(rows, ignore_index=True)
    frame["parametrization"], frame["outcome"], frame["d_model"] = "mup", "finished", frame["n_params"]
    return frame


def small_sweep(rng: np.random.Generator):
    """The single-seed sweep of tests/test_analysis_coverage.py: 7 sizes x 1 run, 1% noise, L = E + A/N^α."""
    N = np.geomspace(1e6, 1e9, 7)
    L = (SMALL["E"] + SMALL["A"] / N ** SMALL["alpha"]) * np.exp(rng.normal(0, 0.01, N.size))
    return pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N, "n_params": N,
                         "tokens": 1e9, "final_val_loss": L})


SMALL = {"E": 1.7, "A": 400.0, "alpha": 0.34}


def bench_scaling(datasets: int, n_boot: int, seed: int, only: str = "") -> None:
    from analysis.scaling import INTERVALS, fit_scaling
    n = sum(RUNS_PER_BUDGET)
    settings = {f"Chinchilla-like: {n} runs on {len(BUDGETS)} IsoFLOP profiles {RUNS_PER_BUDGET}, log-loss noise sd "
                f"{NOISE_SD[0]} -> {NOISE_SD[1]}": (chinchilla_like, CHINCHILLA),
                f"Chinchilla-like, stronger heteroscedasticity: log-loss noise sd {STRONG_NOISE_SD[0]} -> "
                f"{STRONG_NOISE_SD[1]}": (lambda rng: chinchilla_like(rng, STRONG_NOISE_SD), CHINCHILLA),
                "small sweep: 7 sizes x 1 run, 1% noise, L = E + A/N^alpha": (small_sweep, SMALL)}
    mc = np.sqrt(0.95 * 0.05 / datasets)
    print(f"scaling law: {datasets} data sets per setting, {n_boot} bootstrap replicates, 95% intervals; "
          f"Monte-Carlo standard error of one coverage near 0.95: {mc:.3f}")
    for title, (make, truth) in settings.items():
        if only not in title:
            continue
        rng = np.random.default_rng(seed)
        names = list(truth)
        hits = {m: {k: [] for k in names} for m in INTERVALS}
        width = {m: {k: [] for k in names} for m in INTERVALS}
        t0 = time.perf_counter()
        for i in range(datasets):
            trials = make(rng)
            for method in INTERVALS:
                (fit,) = fit_scaling(trials, n_boot=n_boot, seed=seed + i, interval=method).fits
                for k in names:
                    ci = getattr(fit, f"{k}_ci")
                    ok = ci is not None and ci[0] is not None
                    hits[method][k].append(ok and ci[0] <= truth[k] <= ci[1])
                    width[method][k].append(ci[1] - ci[0] if ok else np.nan)
        print(f"\n{title} ({time.perf_counter() - t0:.0f} s)")
        print(f"{'parameter':<10}" + "".join(f"{m + ' cover':>16}{m + ' width':>16}" for m in INTERVALS))
        for k in names:
            print(f"{k:<10}" + "".join(f"{np.mean(hits[m][k]):>16.3f}{np.nanmedian(width[m][k]):>16.4g}"
                                       for m in INTERVALS))
        print(f"{'all':<10}" + "".join(f"{np.mean([h for k in names for h in hits[m][k]]):>16.3f}{'':>16}"
                                       for m in INTERVALS))
        ratio = np.nanmedian(np.concatenate([np.array(width["residual"][k]) / np.array(width["pairs"][k])
                                             for k in names]))
        print(f"median width ratio residual / pairs: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["transfer", "scaling"], nargs="?", default="transfer")
    parser.add_argument("--datasets", type=int, default=80)
    parser.add_argument("--only", default="", help="scaling: run the settings whose title contains this")
    parser.add_argument("--curves", type=int, default=300)
    parser.add_argument("--boot", type=int, help="bootstrap replicates (default: 200 transfer, 100 scaling)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.which == "transfer":
        bench_transfer(args.curves, args.boot or 200, args.seeds, args.seed)
    else:
        bench_scaling(args.datasets, args.boot or 100, args.seed, args.only)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
