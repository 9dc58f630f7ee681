""""Multipliers free the scale" (docs/science.md §5, first bullet): the loss penalty of a mis-set
fixed multiplier (a µP forward multiplier α, or a WD / LR / init multiplier, off by a factor)
with learnable multipliers and without.

Runs: finished and diverged grid runs. The knobs are the multiplier columns of KNOBS that vary
across the runs of a group; a run's setting is its knob values, named by their ratio to the
config default ("alpha_emb ×1/16"). The reference setting is every knob at its default. Per
parametrization and setting: penalty = mean loss(setting) − mean loss(reference) over seeds,
with a Welch t-interval. Then, per setting and LRM parametrization, the relief = penalty
without multipliers − penalty with them (a contrast of four cell means, Welch–Satterthwaite
interval): positive when the learnable multipliers absorb the mis-set scale. A setting where every seed diverged
has an infinite penalty (reported as diverged, never averaged).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import TrainConfig, UserError

from . import frames
from .results import Result, json_key
from .stats import welch_contrast

KNOBS = ("alpha_emb", "alpha_out", "alpha_attn", "lr_mult_emb", "lr_mult_hidden", "lr_mult_head",
         "wd_mult_emb", "wd_mult_hidden", "wd_mult_head", "init_std", "emb_init_std", "head_init_std")


@dataclass(frozen=True, kw_only=True)
class Penalty(Result):
    """Mean loss at a mis-set setting − at the default, of one parametrization (inf: every seed diverged)."""
    parametrization: str
    setting: str
    n: int
    n_reference: int
    n_diverged: int
    loss_mean: float | None
    reference_mean: float | None
    penalty: float | None
    penalty_ci: list[float | None]


@dataclass(frozen=True, kw_only=True)
class Relief(Result):
    """Penalty without − with learnable multipliers at one setting."""
    setting: str
    with_: str = json_key("with")
    without: str
    relief: float | None
    relief_ci: list[float | None]
    penalty_without: float | None
    penalty_with: float | None
    clearly_smaller_with_multipliers: bool


@dataclass(frozen=True, kw_only=True)
class FreedomGroup(Result):
    group: dict[str, Any]
    label: str
    settings: list[str]           # mis-set settings, named by their ratios to the defaults
    penalties: list[Penalty]      # per parametrization and setting
    reliefs: list[Relief]         # per setting and parametrization with learnable multipliers


@dataclass(frozen=True, kw_only=True)
class FreedomResult(Result):
    analysis: str = "freedom"
    knobs: list[str]
    loss: str
    ci_level: float
    ci_method: str
    selection: str
    treatment: dict[str, str]
    groups: list[FreedomGroup]
    warnings: list[str]


def default_of(knob: str) -> float:
    return float(TrainConfig.model_fields[knob].default)


def setting_name(knobs: list[str], values: tuple) -> str:
    parts = []
    for knob, value in zip(knobs, values):
        ratio = value / default_of(knob) if default_of(knob) else math.inf
        if not math.isclose(ratio, 1.0):
            parts.append(f"{knob} ×{_ratio_text(ratio)}")
    return ", ".join(parts) or "default"


def _ratio_text(ratio: float) -> str:
    if ratio >= 1:
        return f"{ratio:g}"
    return f"1/{1 / ratio:g}"


def fit_freedom(trials: pd.DataFrame, *, loss: str = "final_val_loss", level: float = 0.95) -> FreedomResult:
    frames.require_columns(trials, [loss, "parametrization", "outcome"], "mis-set multipliers")
    runs = frames.usable(frames.grid_runs(trials))
    knobs = [k for k in KNOBS if k in runs.columns and pd.to_numeric(runs[k], errors="coerce").nunique() > 1]
    if not knobs or not runs["parametrization"].map(frames.is_lrm).any() \
            or runs["parametrization"].map(frames.is_lrm).all():
        raise UserError("mis-set multipliers need a grid that varies a fixed multiplier (one of "
                        f"{', '.join(KNOBS)}) away from its default, with and without learnable multipliers")
    groups, warnings = [], []
    rest = [k for k in frames.group_keys(runs) if k != "parametrization"]
    for group, sub in (frames.iter_groups(runs, rest) if rest else [({}, runs)]):
        result, group_warnings = _fit_group(group, sub, knobs, loss, level)
        warnings += group_warnings
        groups.append(result)
    return FreedomResult(knobs=knobs, loss=loss, ci_level=level, ci_method="Welch–Satterthwaite t-interval over seeds",
                         selection="finished and diverged grid runs; reference = every knob at its config default",
                         treatment={"diverged": "loss +inf: a setting whose seeds all diverged has an infinite "
                                                "penalty", "failed": "excluded"},
                         groups=groups, warnings=warnings)


def _fit_group(group: dict, runs: pd.DataFrame, knobs: list[str], loss: str,
               level: float) -> tuple[FreedomGroup, list[str]]:
    runs = runs.assign(_loss=frames.losses(runs, loss))
    runs = runs[~np.isnan(runs["_loss"])]
    values = runs[knobs].apply(pd.to_numeric, errors="coerce")
    runs = runs.assign(_setting=[setting_name(knobs, tuple(row)) for row in values.itertuples(index=False)])
    samples = {(p, s): sub["_loss"].to_numpy() for (p, s), sub in runs.groupby(["parametrization", "_setting"])}
    labels = sorted(runs["parametrization"].unique())
    settings = sorted({s for _, s in samples} - {"default"})
    warnings = [f"{p}: no run at the default setting; no penalties" for p in labels if (p, "default") not in samples]
    penalties = {}
    for p in labels:
        for s in settings:
            if (p, s) in samples and (p, "default") in samples:
                penalties[(p, s)] = _penalty(p, s, samples[(p, s)], samples[(p, "default")], level)
    reliefs = []
    for lrm in (p for p in labels if frames.is_lrm(p)):
        plain = lrm.split("+")[0]
        for s in settings:
            if (lrm, s) in penalties and (plain, s) in penalties:
                reliefs.append(_relief(samples, plain, lrm, s, penalties, level))
    return FreedomGroup(group=group, label=", ".join(f"{k}={v}" for k, v in group.items()) or "all runs",
                        settings=settings, penalties=list(penalties.values()), reliefs=reliefs), warnings


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _penalty(label: str, setting: str, mis: np.ndarray, ref: np.ndarray, level: float) -> Penalty:
    if _finite(mis).size:
        penalty, ci = welch_contrast([_finite(mis), _finite(ref)], [1.0, -1.0], level)
    else:
        penalty, ci = math.inf, [None, None]
    return Penalty(parametrization=label, setting=setting, n=int(mis.size), n_reference=int(ref.size),
                   n_diverged=int((~np.isfinite(mis)).sum()),
                   loss_mean=float(_finite(mis).mean()) if _finite(mis).size else None,
                   reference_mean=float(_finite(ref).mean()) if _finite(ref).size else None,
                   penalty=penalty, penalty_ci=ci)


def _relief(samples: dict, plain: str, lrm: str, setting: str, penalties: dict, level: float) -> Relief:
    without, with_ = penalties[(plain, setting)].penalty, penalties[(lrm, setting)].penalty
    if without is None or with_ is None or math.isinf(with_):
        estimate, ci = None, [None, None]
    elif math.isinf(without):
        estimate, ci = math.inf, [None, None]
    else:
        cells = [_finite(samples[k]) for k in ((plain, setting), (plain, "default"), (lrm, setting), (lrm, "default"))]
        estimate, ci = welch_contrast(cells, [1.0, -1.0, -1.0, 1.0], level)
    return Relief(setting=setting, with_=lrm, without=plain, relief=estimate, relief_ci=ci,
                  penalty_without=without, penalty_with=with_,
                  # every seed diverged without multipliers, and not with them: as clear as it gets
                  clearly_smaller_with_multipliers=bool(estimate == math.inf or ci[0] is not None and ci[0] > 0))
