"""Equilibrium norms (docs/science.md §1, §5): in a sweep of S = sqrt(η/λ) at fixed sqrt(η·λ),
the matrix RMS should follow S (log-log slope 1) while, with learnable multipliers, the
effective scale (multiplier × matrix, eff_rms/...) stays flat (slope 0) and so does the loss.

S is that of the hidden matrices: η = lr × lr_mult_hidden, λ = weight_decay × wd_mult_hidden
(a sweep of the base lr and weight_decay moves every group alike; a sweep of the hidden
multipliers moves the hidden matrices alone). Width factors (µP's 1/m) are fixed within one
width, so they only shift the intercept. Each role is fitted against S only when its own
group's η/λ moves with it: the embedding and head of a hidden-only sweep are left out.
Runs: finished grid runs; a sweep qualifies when it has ≥ 3 values of S at one width and one
sqrt(η·λ) (rounded to 1%).

The slope need not be one number over the whole sweep: measured norms follow S with slope
≈ 0.5 at small S and ≈ 1 at large S. So beside the one-line fit, each series with ≥ 4 values of
S gets a two-segment fit: two lines in log-log that meet at a breakpoint S_b chosen by least
squares, each segment's slope with its OLS t-interval given S_b.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import UserError

from . import frames
from .layers import geometric_mean, layer_columns, role_values
from .results import Result, inline, json_key, optional
from .stats import LogLogFit, loglog_fit, t_interval

MIN_S_VALUES = 3
MIN_SEGMENT_S_VALUES = 4          # a two-segment fit needs ≥ 2 values of S on each side of S_b
BREAKPOINTS = 60                  # candidate log S_b between the second and the second-to-last S
PREDICTED = {"weight_rms": 1.0, "eff_rms": 0.0}
# The issue-8 replication criteria (sweeps/paper_norms.yaml states them too).
WEIGHT_SLOPE_RANGE = (0.8, 1.2)   # without multipliers: log‖W‖ follows log S
EFF_SLOPE_MAX = 0.3               # with multipliers: |slope| of the effective scale
# The LR/WD multiplier columns of each role's parameter group (trainer/parametrization.py).
GROUP_OF_ROLE = {"embedding": "emb", "head": "head"}   # every other matrix role: hidden
POOLED = "all swept matrices"


@dataclass(frozen=True, kw_only=True)
class NormPoint(Result):
    S: float
    geo_mean: float               # over the runs at this S
    n: int


@dataclass(frozen=True, kw_only=True)
class LossPoint(Result):
    S: float
    loss_mean: float
    n: int


@dataclass(frozen=True, kw_only=True)
class SegmentedFit(Result):
    """log y = c + slope_low·min(log S − log S_b, 0) + slope_high·max(log S − log S_b, 0): two lines in
    log-log meeting at S_b, which minimises the squared residuals (a continuous grid between the second
    and the second-to-last S). Intervals: OLS t-intervals of the two slopes given S_b (n − 3 dof): they
    leave out the uncertainty of S_b."""
    breakpoint_S: float
    slope_low: float              # over S ≤ S_b
    slope_low_ci: list[float | None]
    slope_high: float             # over S ≥ S_b
    slope_high_ci: list[float | None]
    n_low: int                    # runs at S ≤ S_b
    n_high: int
    rms_one_line: float           # residual RMS (log) of the one-line fit
    rms_two_segments: float


@dataclass(frozen=True, kw_only=True)
class NormsSeries(Result):
    """The RMS of one role (or the pooled swept matrices) against S."""
    kind: str | None = optional()  # weight_rms or eff_rms; a pooled fit is filed under its kind instead
    role: str
    fit: LogLogFit = inline()
    predicted: float              # the predicted slope
    points: list[NormPoint]
    segments: SegmentedFit | None = optional()   # below and above a breakpoint (≥ 4 values of S)


@dataclass(frozen=True, kw_only=True)
class LossProfile(Result):
    points: list[LossPoint]
    spread: float | None          # max − min of the mean losses


@dataclass(frozen=True, kw_only=True)
class NormsVerdict(Result):
    quantity: str                 # the pooled kind the criterion reads: weight_rms, or eff_rms with multipliers
    slope: float | None
    slope_ci: list[float | None] | None
    target: str
    met: bool


@dataclass(frozen=True, kw_only=True)
class SpreadComparison(Result):
    """The loss spread over S with multipliers vs without, at one width and sqrt(η·λ)."""
    with_: str = json_key("with")
    without: str
    size_column: str = json_key(None)
    size: float = json_key("{size_column}")
    spread_with: float
    spread_without: float
    ratio: float | None
    smaller_with_multipliers: bool


@dataclass(frozen=True, kw_only=True)
class NormsSweep(Result):
    """One sqrt(η/λ) sweep: one parametrization at one width and one sqrt(η·λ)."""
    group: dict[str, Any]
    label: str
    size_column: str = json_key(None)
    size: float = json_key("{size_column}")   # in the JSON under its column's name
    sqrt_lr_wd: float
    S_values: list[float]
    n_runs: int
    lrm: bool                     # learnable multipliers
    swept_roles: list[str]        # roles whose own η/λ moves with S
    series: list[NormsSeries]     # per kind and role
    pooled: dict[str, NormsSeries]   # per kind: the fit of the geometric mean over every swept matrix
    loss: LossProfile
    verdict: NormsVerdict         # pooled slope against the replication criterion


@dataclass(frozen=True, kw_only=True)
class NormsResult(Result):
    analysis: str = "norms"
    x: str
    predicted_slopes: dict[str, float]
    selection: str
    aggregation: str
    ci_level: float
    criteria: dict[str, Any]
    treatment: dict[str, str]
    sweeps: list[NormsSweep]
    comparisons: list[SpreadComparison]
    warnings: list[str]


def group_lr_wd(runs: pd.DataFrame, group: str) -> tuple[np.ndarray, np.ndarray]:
    """(η, λ) of a parameter group per run: the base lr and weight_decay times its multipliers."""
    return (_column(runs, "lr") * _column(runs, f"lr_mult_{group}", 1.0),
            _column(runs, "weight_decay") * _column(runs, f"wd_mult_{group}", 1.0))


def group_ratio(runs: pd.DataFrame, group: str) -> np.ndarray:
    """η/λ of a parameter group per run (NaN where λ = 0)."""
    lr, wd = group_lr_wd(runs, group)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(wd > 0, lr / wd, np.nan)


def group_product(runs: pd.DataFrame, group: str) -> np.ndarray:
    lr, wd = group_lr_wd(runs, group)
    return lr * wd


def _column(runs: pd.DataFrame, name: str, default: float | None = None) -> np.ndarray:
    if name not in runs.columns:
        return np.full(len(runs), np.nan if default is None else default)
    return pd.to_numeric(runs[name], errors="coerce").to_numpy(dtype=float)


def fit_norms(trials: pd.DataFrame, *, size: str = "d_model", loss: str = "final_val_loss",
              level: float = 0.95) -> NormsResult:
    frames.require_columns(trials, ["lr", "weight_decay", size, "parametrization", "outcome"], "equilibrium norms")
    if not any(c.startswith("weight_rms/") for c in trials.columns):
        raise UserError("equilibrium norms need weight_rms/<layer> metrics; the trials table has none")
    runs = frames.grid_runs(trials)
    runs = runs[runs["outcome"].eq("finished")].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        runs["_S"] = np.sqrt(group_ratio(runs, "hidden"))
        runs["_P"] = np.round(np.log(np.sqrt(group_product(runs, "hidden"))) / np.log(1.01))  # sqrt(η·λ) to 1%
    runs = runs[np.isfinite(runs["_S"]) & np.isfinite(runs["_P"])]
    keys = frames.group_keys(runs) + [size, "_P"]
    sweeps = [_fit_sweep(group, sub, size, loss, level) for group, sub in frames.iter_groups(runs, keys)
              if sub["_S"].round(12).nunique() >= MIN_S_VALUES]
    if not sweeps:
        raise UserError(f"equilibrium norms need a sqrt(η/λ) sweep: ≥ {MIN_S_VALUES} values of sqrt(η/λ) of the "
                        f"hidden matrices (lr·lr_mult_hidden / weight_decay·wd_mult_hidden) at one width and one "
                        f"sqrt(η·λ) (docs/science.md §5); these runs have none")
    return NormsResult(x="S = sqrt(η/λ) of the hidden matrices", predicted_slopes=PREDICTED,
                       selection="finished grid runs; groups of one width and one sqrt(η·λ) of the hidden matrices",
                       aggregation="geometric mean over blocks (pooled: over every swept matrix)", ci_level=level,
                       criteria={"weight_slope_range": list(WEIGHT_SLOPE_RANGE), "eff_slope_max": EFF_SLOPE_MAX},
                       treatment={"diverged": "excluded (no equilibrium)", "failed": "excluded"}, sweeps=sweeps,
                       comparisons=_compare_spreads(sweeps, size), warnings=[])


def _swept_roles(runs: pd.DataFrame) -> list[str]:
    """Roles whose own group's η/λ varies across the sweep (hidden roles always do)."""
    roles = sorted(layer_columns(runs, "weight_rms"))
    moving = {g: np.unique(np.round(np.log(group_ratio(runs, g)), 6)).size > 1 for g in ("emb", "head")}
    return [r for r in roles if moving.get(GROUP_OF_ROLE.get(r), True)]


def _fit_sweep(group: dict, runs: pd.DataFrame, size: str, loss: str, level: float) -> NormsSweep:
    S = runs["_S"].to_numpy()
    product = float(np.sqrt(np.median(group_product(runs, "hidden"))))
    clean = {k: v for k, v in group.items() if k not in ("_P", size)}
    swept = _swept_roles(runs)
    out = {"group": clean, "label": frames.group_label(clean), "size_column": size, "size": group[size],
           "sqrt_lr_wd": product,
           "S_values": sorted(set(np.round(S, 12).tolist())), "n_runs": len(runs), "lrm": frames.is_lrm(group["parametrization"]),
           "swept_roles": swept, "series": [], "pooled": {}, "loss": _loss_profile(S, runs, loss)}
    for kind in ("weight_rms", "eff_rms"):
        if kind == "eff_rms" and not out["lrm"]:
            continue  # without multipliers eff_rms is weight_rms
        for role, values in role_values(runs, kind).items():
            fit = loglog_fit(S, values, level)
            if role not in swept or fit.n_runs == 0:
                continue
            out["series"].append(NormsSeries(kind=kind, role=role, fit=fit, predicted=PREDICTED[kind],
                                             points=_points(S, values), segments=segmented_fit(S, values, level)))
        cols = [c for r, cs in layer_columns(runs, kind).items() if r in swept for c in cs]
        if cols:  # every swept matrix at once: the number the criterion is read from
            values = geometric_mean(runs[cols])
            out["pooled"][kind] = NormsSeries(role=POOLED, fit=loglog_fit(S, values, level), predicted=PREDICTED[kind],
                                              points=_points(S, values), segments=segmented_fit(S, values, level))
    return NormsSweep(**out, verdict=_verdict(out))


def segmented_fit(x: np.ndarray, y: np.ndarray, level: float) -> SegmentedFit | None:
    """Two lines in log y vs log x meeting at a least-squares breakpoint (SegmentedFit); None with
    fewer than MIN_SEGMENT_S_VALUES values of x or no residual degree of freedom."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    values = np.unique(lx)
    if values.size < MIN_SEGMENT_S_VALUES or lx.size < 4:
        return None
    breaks = np.linspace(values[1], values[-2], BREAKPOINTS)                      # (K,)
    d = lx[None, :] - breaks[:, None]                                             # (K, n)
    X = np.stack([np.ones_like(d), np.minimum(d, 0), np.maximum(d, 0)], -1)      # (K, n, 3)
    coef = np.linalg.solve(X.transpose(0, 2, 1) @ X, (X.transpose(0, 2, 1) @ ly)[..., None])[..., 0]   # (K, 3)
    sse = ((X @ coef[..., None])[..., 0] - ly[None, :]) ** 2
    k = int(np.argmin(sse.sum(1)))
    dof = lx.size - 3
    cov = sse[k].sum() / dof * np.linalg.inv(X[k].T @ X[k]) if dof > 0 else np.full((3, 3), np.nan)
    c, low, high = coef[k]
    one = np.polyfit(lx, ly, 1)
    rms_one = float(np.sqrt(np.mean((np.polyval(one, lx) - ly) ** 2)))
    return SegmentedFit(breakpoint_S=float(np.exp(breaks[k])),
                        slope_low=float(low), slope_low_ci=t_interval(float(low), float(np.sqrt(cov[1, 1])), dof, level),
                        slope_high=float(high),
                        slope_high_ci=t_interval(float(high), float(np.sqrt(cov[2, 2])), dof, level),
                        n_low=int((lx <= breaks[k]).sum()), n_high=int((lx >= breaks[k]).sum()),
                        rms_one_line=rms_one, rms_two_segments=float(np.sqrt(sse[k].mean())))


def _verdict(sweep: dict) -> NormsVerdict:
    """The pooled slope against its criterion: weight RMS for plain runs, effective RMS for LRM."""
    kind = "eff_rms" if sweep["lrm"] else "weight_rms"
    pooled = sweep["pooled"].get(kind)
    slope = None if pooled is None else pooled.fit.exponent
    if kind == "weight_rms":
        target = f"slope in [{WEIGHT_SLOPE_RANGE[0]}, {WEIGHT_SLOPE_RANGE[1]}]"
        met = slope is not None and WEIGHT_SLOPE_RANGE[0] <= slope <= WEIGHT_SLOPE_RANGE[1]
    else:
        target = f"|slope| < {EFF_SLOPE_MAX}"
        met = slope is not None and abs(slope) < EFF_SLOPE_MAX
    return NormsVerdict(quantity=kind, slope=slope, slope_ci=None if pooled is None else pooled.fit.exponent_ci,
                        target=target, met=bool(met))


def _compare_spreads(sweeps: list[NormsSweep], size: str) -> list[SpreadComparison]:
    """Loss spread over S with multipliers vs without, at the same width and sqrt(η·λ)."""
    out = []
    for lrm in (s for s in sweeps if s.lrm):
        for plain in (s for s in sweeps if not s.lrm):
            same = (plain.size == lrm.size and np.isclose(plain.sqrt_lr_wd, lrm.sqrt_lr_wd, rtol=0.01)
                    and {k: v for k, v in plain.group.items() if k != "parametrization"}
                    == {k: v for k, v in lrm.group.items() if k != "parametrization"})
            a, b = lrm.loss.spread, plain.loss.spread
            if same and a is not None and b is not None:
                out.append(SpreadComparison(with_=lrm.label, without=plain.label, size_column=size, size=lrm.size,
                                            spread_with=a, spread_without=b, ratio=a / b if b > 0 else None,
                                            smaller_with_multipliers=bool(a < b)))
    return out


def _loss_profile(S: np.ndarray, runs: pd.DataFrame, loss: str) -> LossProfile:
    """Mean loss per S, and its spread (max − min of the means): flat with multipliers."""
    if loss not in runs.columns:
        return LossProfile(points=[], spread=None)
    values = pd.to_numeric(runs[loss], errors="coerce").to_numpy(dtype=float)
    points = [LossPoint(S=float(s), loss_mean=float(np.nanmean(values[S == s])), n=int(np.isfinite(values[S == s]).sum()))
              for s in np.unique(S) if np.isfinite(values[S == s]).any()]
    means = [p.loss_mean for p in points]
    return LossProfile(points=points, spread=float(max(means) - min(means)) if means else None)


def _points(S: np.ndarray, values: np.ndarray) -> list[NormPoint]:
    out = []
    for s in np.unique(S):
        v = values[(S == s) & np.isfinite(values) & (values > 0)]
        if v.size:
            out.append(NormPoint(S=float(s), geo_mean=float(np.exp(np.log(v).mean())), n=int(v.size)))
    return out
