"""What the fits return: one frozen dataclass per result and per group / curve / fit inside it.

Readers (plots, report_md) use attributes; `to_dict()` is the JSON object summary.json holds,
keys named and ordered as the fields (a field may be left out of it: see `optional`), and
`load(data)` reads it back (report_md.render accepts either). Rows
whose keys follow the data (points, best-loss and gap rows keyed by the size column,
penalties, reliefs, log-log fits) stay plain dicts.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

Row = dict[str, Any]   # one plain JSON row: a point, a table row, a log-log fit


def _not_none(result: "Result", value: Any) -> bool:
    return value is not None


def optional(when: Callable[["Result", Any], bool] = _not_none) -> Any:
    """A field that is in the JSON only when when(result, value) holds (default: not None)."""
    return field(default=None, metadata={"when": when})


@dataclass(frozen=True, kw_only=True)
class Result:
    """Base of every typed result: to_dict() for JSON; r["key"], r.get, r.keys, `in`: the
    read-only compatibility path for dict-style readers (the JSON keys, the JSON's presence)."""

    def items(self) -> list[tuple[str, Any]]:
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "json_key" in f.metadata:
                if f.metadata["json_key"] is None:
                    continue                              # not part of the JSON
                out.append((getattr(self, f.metadata["json_key"]), value))
            elif "when" not in f.metadata or f.metadata["when"](self, value):
                out.append((f.name, value))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """The inverse of to_dict(): nested results typed again."""
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        extra = [k for k in data if k not in {f.name for f in fields}]   # a key named after a column
        kwargs = {}
        for f in fields:
            if "json_key" in f.metadata:
                kwargs[f.name] = extra[0] if f.metadata["json_key"] is None else data[extra[0]]
            elif f.name in data:
                kwargs[f.name] = _load(hints[f.name], data[f.name])
        return cls(**kwargs)

    def map_values(self, fn: Callable[[Any], Any]) -> "Result":
        """The same result with fn applied to every leaf value (run_fits: numpy -> JSON types)."""
        return dataclasses.replace(self, **{f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)})

    def __getitem__(self, key: str) -> Any:
        for k, value in self.items():
            if k == key:
                return value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _load(hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint.from_dict(value)
    if typing.get_origin(hint) is list and args and isinstance(args[0], type) and issubclass(args[0], Result):
        return [args[0].from_dict(v) for v in value]
    return value


def load(data: "dict[str, Any] | Result") -> "Result":
    """A fit's result from its JSON object (summary.json), by its `analysis` name; a Result as it is."""
    if isinstance(data, Result):
        return data
    return {cls.analysis: cls for cls in RESULT_TYPES}[data["analysis"]].from_dict(data)


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, Result):
        return value.map_values(fn)
    if isinstance(value, dict):
        return {str(k): _map(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_map(v, fn) for v in value]
    return fn(value)


# ---- comparison.compare -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Comparison(Result):
    analysis: str = "comparison"
    size: str
    hp: str
    by: list[str]                 # columns of a size: `size`, plus n_layers/tokens when they vary
    loss: str
    reference: str                # the parametrization the gaps are measured against
    selection: str
    parametrizations: list[str]
    best: list[Row]               # per parametrization and size: loss_mean, loss_sem, n, best_<hp>
    treatment: dict[str, str]
    gaps: list[Row]               # per parametrization and size: gap to the reference, gap_ci
    ci_level: float
    ci_method: str
    warnings: list[str]


# ---- transfer.fit_transfer --------------------------------------------------------------------

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
    points: list[Row]             # per grid value: hp, log2_hp, loss_mean, loss_sem, n, n_diverged
    log2_opt: float | None
    log2_opt_ci: list[float | None]
    opt: float | None
    opt_ci: list[float | None]
    loss_at_opt: float | None
    best_grid_log2: float | None  # the bare argmin of the grid
    window_log2: list[float] | None   # range of the points the parabola went through
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
    k: int                        # parabola window: best grid point ± k
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


# ---- multiplier_scaling.fit_multipliers -------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class MultiplierGroup(Result):
    group: dict[str, Any]
    label: str
    n_runs: int
    n_sizes: int
    series: list[Row]             # per multiplier series: log-log fit, prediction, points
    note: str | None = optional()  # why there is no width exponent
    matrix_norms: list[Row] | None = optional()   # per role: log-log fit of weight_rms vs width


@dataclass(frozen=True, kw_only=True)
class MultiplierResult(Result):
    analysis: str = "multipliers"
    size: str
    selection: str
    aggregation: str
    predictions: dict[str, float]  # µP width exponent per role
    treatment: dict[str, str]
    prediction_note: str
    ci_level: float
    groups: list[MultiplierGroup]
    warnings: list[str]


# ---- norms.fit_norms --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class NormsSweep(Result):
    """One sqrt(η/λ) sweep: one parametrization at one width and one sqrt(η·λ)."""
    group: dict[str, Any]
    label: str
    size_column: str = field(metadata={"json_key": None})
    size: float = field(metadata={"json_key": "size_column"})   # in the JSON under its column's name
    sqrt_lr_wd: float
    S_values: list[float]
    n_runs: int
    lrm: bool                     # learnable multipliers
    swept_roles: list[str]        # roles whose own η/λ moves with S
    series: list[Row]             # per kind and role: log-log fit against S
    pooled: dict[str, Row]        # per kind: the fit of the geometric mean over every swept matrix
    loss: Row                     # points (mean loss per S) and spread
    verdict: Row                  # pooled slope against the replication criterion


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
    comparisons: list[Row]        # loss spread with vs without multipliers at one width
    warnings: list[str]


# ---- freedom.fit_freedom ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FreedomGroup(Result):
    group: dict[str, Any]
    label: str
    settings: list[str]           # mis-set settings, named by their ratios to the defaults
    penalties: list[Row]          # per parametrization and setting
    reliefs: list[Row]            # per setting: penalty without − with multipliers


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


# ---- scaling.fit_scaling ----------------------------------------------------------------------

def _fitted(fit: "ScalingFit", value: Any) -> bool:
    return fit.exact_fit is not None


def _with_interval(fit: "ScalingFit", value: Any) -> bool:
    return fit.exact_fit is False and value is not None


@dataclass(frozen=True, kw_only=True)
class ScalingFit(Result):
    """L = E + A/N^alpha (+ B/D^beta) of one parametrization; no law (a note) below 3 sizes."""
    group: dict[str, Any]
    label: str
    n_points: int
    n_sizes: int
    N_range: list[float] | None
    points: list[Row]             # per (N, D): loss_mean, loss_std, n
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
    loss: str
    selection: str
    n_boot: int
    ci_level: float
    tokens_vary: bool             # the law has the B/D^beta term
    treatment: dict[str, str]
    fits: list[ScalingFit]
    warnings: list[str]


# ---- tuning.tuning_cost -----------------------------------------------------------------------

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
    points: list[Row]             # compute, best_loss so far
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


# ---- coordcheck.coord_check -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CoordGroup(Result):
    group: dict[str, Any]
    label: str
    setting: float | None         # the hp value every width is compared at
    max_abs_exponent_last_step: float | None
    slopes: list[Row]             # per activation name and step: log-log fit against width
    points: list[Row]             # per name, step and width: mean_abs


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


RESULT_TYPES = (Comparison, TransferResult, MultiplierResult, NormsResult, FreedomResult, ScalingResult, TuningResult,
                CoordCheckResult)
