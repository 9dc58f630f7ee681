"""What the fits return: one frozen dataclass per result, per group / curve / fit inside it, and
per fixed-key row of those (a log-log fit, a penalty, a verdict, ...).

Readers (plots, report_md) use attributes; `to_dict()` is the JSON object summary.json holds,
keys named and ordered as the fields, and `load(data)` reads it back (report_md.render accepts
either). A field's JSON key may differ from its name (`json_key`): a fixed one (`with_` is
"with"), one named after a data column ("{size_column}": d_model), or none (left out); `optional`
leaves a field out when it does not apply; `inline` puts a nested result's keys in the row's own
object (a row's log-log fit). The comparison's best-loss and gap rows stay plain dicts: their keys
follow the data (the size columns, n_layers and tokens when they vary, best_<hp>).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

Row = dict[str, Any]   # one plain JSON row: a best-loss or gap row, keyed by the data


def _not_none(result: "Result", value: Any) -> bool:
    return value is not None


def optional(when: Callable[["Result", Any], bool] = _not_none) -> Any:
    """A field that is in the JSON only when when(result, value) holds (default: not None)."""
    return field(default=None, metadata={"when": when})


def json_key(key: str | None) -> Any:
    """A field under another JSON key: "with" (a Python keyword), "{size_column}" (the value of the
    field size_column: a data column's name), or None (not in the JSON)."""
    return field(metadata={"json_key": key})


def inline() -> Any:
    """A nested result whose keys stand in the row's own JSON object (a row's log-log fit)."""
    return field(metadata={"inline": True})


@dataclass(frozen=True, kw_only=True)
class Result:
    """Base of every typed result: to_dict() for JSON; r["key"], r.get, r.keys, `in`: the
    read-only compatibility path for dict-style readers (the JSON keys, the JSON's presence).
    A JSON key that is no field's name reads as an attribute too: getattr(r, "with")."""

    def items(self) -> list[tuple[str, Any]]:
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "inline" in f.metadata:
                out += value.items()
            elif "json_key" in f.metadata:
                if f.metadata["json_key"] is not None:
                    out.append((f.metadata["json_key"].format_map(vars(self)), value))
            elif "when" not in f.metadata or f.metadata["when"](self, value):
                out.append((f.name, value))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self.items()}

    @classmethod
    def fixed_keys(cls) -> set[str]:
        """The JSON keys that do not follow the data (every key but a column's name)."""
        hints = typing.get_type_hints(cls)
        return set().union(*(hints[f.name].fixed_keys() if "inline" in f.metadata
                             else {f.metadata.get("json_key", f.name)} for f in dataclasses.fields(cls)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """The inverse of to_dict(): nested results typed again."""
        hints = typing.get_type_hints(cls)
        extra = [k for k in data if k not in cls.fixed_keys()]   # a key named after a column
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f.metadata.get("json_key", f.name)
            if "inline" in f.metadata:
                kwargs[f.name] = hints[f.name].from_dict(data)
            elif key is None or "{" in key:
                kwargs[f.name] = extra[0] if key is None else data[extra[0]]
            elif key in data:
                kwargs[f.name] = _load(hints[f.name], data[key])
        return cls(**kwargs)

    def map_values(self, fn: Callable[[Any], Any]) -> "Result":
        """The same result with fn applied to every leaf value (run_fits: numpy -> JSON types)."""
        return dataclasses.replace(self, **{f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)})

    def __getitem__(self, key: str) -> Any:
        for k, value in self.items():
            if k == key:
                return value
        raise KeyError(key)

    def __getattr__(self, name: str) -> Any:   # only asked when `name` is no field or method
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None

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


def _is_result(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Result)


def _load(hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args and value is not None:           # X | None: as X
        return _load(next(a for a in args if a is not type(None)), value)
    if _is_result(hint):
        return hint.from_dict(value)
    if typing.get_origin(hint) is list and args and _is_result(args[0]):
        return [args[0].from_dict(v) for v in value]
    if typing.get_origin(hint) is dict and args and _is_result(args[1]):
        return {k: args[1].from_dict(v) for k, v in value.items()}
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


# ---- stats.loglog_fit: the power law of a row ---------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LogLogFit(Result):
    """y = prefactor·x^exponent by OLS of log y on log x over runs (no interval below 3 runs)."""
    exponent: float | None
    exponent_ci: list[float | None]
    prefactor: float | None
    n_runs: int
    n_x: int                      # distinct x values; < 2: no fit
    ci_method: str | None


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
class WidthPoint(Result):
    """The values of one series at one width: their geometric mean and range over runs."""
    size: float
    geo_mean: float
    min: float
    max: float
    n: int


@dataclass(frozen=True, kw_only=True)
class MultiplierSeries(Result):
    """A learned multiplier (or product of them) against width."""
    name: str                     # role, plus the stat of a vector multiplier ("attn_q row_rms")
    role: str
    source: str                   # the metrics it was read from
    fit: LogLogFit = inline()
    prediction: float | None      # µP width exponent, where there is one
    minus_prediction: float | None
    points: list[WidthPoint]


@dataclass(frozen=True, kw_only=True)
class MatrixNorm(Result):
    """The stored matrix RMS (weight_rms) of one role against width."""
    role: str
    fit: LogLogFit = inline()
    points: list[WidthPoint]


@dataclass(frozen=True, kw_only=True)
class MultiplierGroup(Result):
    group: dict[str, Any]
    label: str
    n_runs: int
    n_sizes: int
    series: list[MultiplierSeries]
    note: str | None = optional()  # why there is no width exponent
    matrix_norms: list[MatrixNorm] | None = optional()


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
class NormsSeries(Result):
    """The RMS of one role (or the pooled swept matrices) against S."""
    kind: str | None = optional()  # weight_rms or eff_rms; a pooled fit is filed under its kind instead
    role: str
    fit: LogLogFit = inline()
    predicted: float              # the predicted slope
    points: list[NormPoint]


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


# ---- freedom.fit_freedom ----------------------------------------------------------------------

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


# ---- scaling.fit_scaling ----------------------------------------------------------------------

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


# ---- coordcheck.coord_check -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CoordSlope(Result):
    """Mean |activation| of one name at one step against width."""
    name: str
    step: int
    fit: LogLogFit = inline()


@dataclass(frozen=True, kw_only=True)
class CoordPoint(Result):
    name: str
    step: int
    size: float
    mean_abs: float               # geometric mean of |activation| over the runs
    n: int


@dataclass(frozen=True, kw_only=True)
class CoordGroup(Result):
    group: dict[str, Any]
    label: str
    setting: float | None         # the hp value every width is compared at
    max_abs_exponent_last_step: float | None
    slopes: list[CoordSlope]      # per activation name and step
    points: list[CoordPoint]      # per name, step and width


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
