"""Coverage of every interval method: simulate many sweeps with known truth and count how often
the 95% interval holds it.

Each band is set from the coverage measured with these fixed seeds (docs/analysis.md, "Measured
coverage of the intervals"), wide enough for the Monte Carlo error of the simulation count
and tight enough to fail for a broken method: a zero-width interval covers ~0%, one 2x too
narrow ~67%, one 1.5x too narrow ~81%, one 2x too wide ~100%.

Speed: many independent curves go through one fit (one parametrization label per simulated
sweep), and only the columns the fits read are kept.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import synthetic as syn
from analysis.comparison import compare
from analysis.scaling import fit_scaling
from analysis.stats import loglog_fit, welch_contrast
from analysis.transfer import fit_transfer

LEVEL = 0.95
COLUMNS = ["parametrization", "d_model", "lr", "seed", "outcome", "final_val_loss", "mode", "sweep",
           "n_params", "tokens"]


def coverage(truths, intervals) -> float:
    """Fraction of intervals that hold their truth; a null interval counts as a miss."""
    hits = [ci[0] is not None and ci[0] <= t <= ci[1] for t, ci in zip(truths, intervals, strict=True)]
    return float(np.mean(hits))


def transfer_sweeps(n: int, seeds: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """n independent transfer sweeps (one label each, 4 widths) with random optima and γ in [−1, 0]."""
    rng = np.random.default_rng(seed)
    labels = {f"p{i}": syn.LabelTruth(c=-7.0 - rng.uniform(0, 1), gamma=-rng.uniform(0, 1)) for i in range(n)}
    spec = syn.TransferSpec(labels=labels, seeds=seeds)
    tables, truth = syn.synthetic_tables(seed=seed, transfer=spec, history=False, coord_steps=0)
    return tables.trials[COLUMNS], truth["transfer"]


@pytest.fixture(scope="module")
def seeded_transfer():
    trials, truth = transfer_sweeps(200, seeds=3, seed=11)
    return fit_transfer(trials, n_boot=200, level=LEVEL, seed=0), truth


@pytest.mark.slow  # a coverage study: hundreds of refits
def test_transfer_optimum_seed_bootstrap_coverage(seeded_transfer):
    result, truth = seeded_transfer
    curves = result.curves
    truths = [truth["log2_opt"][c.group["parametrization"]][int(c.size)] for c in curves]
    cov = coverage(truths, [c.log2_opt_ci for c in curves])
    assert len(curves) == 800
    assert 0.85 <= cov <= 0.99, cov


@pytest.mark.slow  # a coverage study: hundreds of refits
def test_gamma_seed_bootstrap_coverage(seeded_transfer):
    result, truth = seeded_transfer
    groups = result.groups
    assert {g.ci_method for g in groups} == {"bootstrap over seeds"}
    cov = coverage([truth["gamma"][g.group["parametrization"]] for g in groups], [g.gamma_ci for g in groups])
    assert len(groups) == 200
    assert 0.85 <= cov <= 0.99, cov


@pytest.mark.slow  # a coverage study: hundreds of refits
def test_gamma_ols_coverage_with_one_seed():
    trials, truth = transfer_sweeps(300, seeds=1, seed=12)
    result = fit_transfer(trials, n_boot=10, level=LEVEL, seed=0)   # one seed: the bootstrap is unused
    groups = result.groups
    assert {g.ci_method for g in groups} == {"OLS t-interval over sizes (one seed: no bootstrap)"}
    cov = coverage([truth["gamma"][g.group["parametrization"]] for g in groups], [g.gamma_ci for g in groups])
    assert 0.90 <= cov <= 0.99, cov


def test_loss_gap_coverage():
    """300 widths, each an independent comparison of two parametrizations 0.01 nats apart. The
    optimum sits on a grid point at every width, so the tuned cell is the same for both and
    the true gap is exactly the offset difference."""
    labels = {"mup": syn.LabelTruth(c=-7.0, gamma=0.0), "sp": syn.LabelTruth(c=-7.0, gamma=0.0, offset=0.01)}
    spec = syn.TransferSpec(labels=labels, widths=tuple(range(100, 400)), log2_lrs=(-8.0, -7.0, -6.0), seeds=3)
    tables, _ = syn.synthetic_tables(seed=5, transfer=spec, history=False, coord_steps=0)
    gaps = compare(tables.trials[COLUMNS], level=LEVEL).gaps
    assert len(gaps) == 300
    assert 0.92 <= coverage([0.01] * len(gaps), [g["gap_ci"] for g in gaps]) <= 0.99


def test_mis_set_relief_welch_contrast_coverage():
    """The freedom analysis' relief: (plain mis-set − plain default) − (LRM mis-set − LRM default),
    3 seeds a cell, the plain cells twice as noisy as the LRM cells."""
    rng = np.random.default_rng(11)
    mu, sd = np.array([0.06, 0.0, 0.01, 0.0]), np.array([0.004, 0.004, 0.002, 0.002])
    truth = (mu[0] - mu[1]) - (mu[2] - mu[3])
    intervals = [welch_contrast([rng.normal(m, s, 3) for m, s in zip(mu, sd)], [1, -1, -1, 1], LEVEL)[1]
                 for _ in range(600)]
    cov = coverage([truth] * len(intervals), intervals)
    assert 0.92 <= cov <= 0.99, cov


def test_loglog_ols_coverage():
    """The multiplier/norm exponent: 4 widths x 3 seeds, log-normal scatter around a power law."""
    rng = np.random.default_rng(3)
    x = np.repeat([128.0, 256.0, 512.0, 1024.0], 3)
    y = 0.5 * x ** -0.4 * np.exp(rng.normal(0, 0.05, (500, x.size)))
    cov = coverage([-0.4] * len(y), [loglog_fit(x, row, LEVEL).exponent_ci for row in y])
    assert 0.92 <= cov <= 0.98, cov


@pytest.mark.slow  # a coverage study: hundreds of refits
def test_scaling_bootstrap_coverage_with_one_run_per_size():
    """Chinchilla-style data: one run per size, 7 sizes, 1% log-normal noise, E, A, α known."""
    rng = np.random.default_rng(21)
    N = np.geomspace(1e6, 1e9, 7)
    E, A, alpha = 1.7, 400.0, 0.34
    truths, intervals = [], []
    for i in range(80):
        L = (E + A / N ** alpha) * np.exp(rng.normal(0, 0.01, N.size))
        trials = pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N, "n_params": N,
                               "tokens": 1e9, "final_val_loss": L})
        (fit,) = fit_scaling(trials, n_boot=40, level=LEVEL, seed=i).fits
        truths += [E, A, alpha]
        intervals += [fit.E_ci, fit.A_ci, fit.alpha_ci]
    assert 0.87 <= coverage(truths, intervals) <= 0.99
