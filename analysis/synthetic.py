"""Synthetic sweeps with known ground truth, shaped like tables read from MLflow.

Used by the tests (fits must recover the truth within their intervals) and by the
benchmark (10,000 trials). Every generator returns a trials DataFrame (plus history and
multiplier rows) and writes its ground truth into a plain dict.

Loss model of a grid run (parametrization p, width d, learning rate η, seed s):
    L = E + A·N(d)^-α + offset_p + κ·(log2 η − log2 η*_p(d))² + ε,   ε ~ N(0, noise²)
    log2 η*_p(d) = c_p + γ_p·log2(d / base_width)
and the run diverges when log2 η − log2 η* exceeds `diverge_above` grid steps.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trainer.config import HIDDEN_ROLES, TrainConfig

from .columns import empty_history, empty_multipliers, order_columns
from .tables import Tables

LN_VOCAB = math.log(256)


@dataclass
class LabelTruth:
    c: float                 # log2 η* at the base width
    gamma: float             # transfer exponent
    offset: float = 0.0      # loss offset of this parametrization
    act_growth: float = 0.0  # coordinate check: |act| ∝ width^(act_growth · t / t_max)


def default_labels() -> dict[str, LabelTruth]:
    return {"sp": LabelTruth(c=-6.6, gamma=-1.0, offset=0.02, act_growth=0.5),
            "mup": LabelTruth(c=-7.3, gamma=0.0),
            "mup+scalar": LabelTruth(c=-7.1, gamma=0.0, offset=-0.01)}


def default_mult_exponents() -> dict[str, float]:
    """Learned-multiplier width exponents; `head` is the final-norm weight (the head's scale)."""
    return {"embedding": -0.2, "attn_q": -0.45, "attn_k": -0.4, "attn_v": -0.3, "attn_o": -0.3,
            "mlp_up": -0.25, "mlp_gate": -0.25, "mlp_down": -0.25, "head": -0.8}


@dataclass
class TransferSpec:
    labels: dict[str, LabelTruth] = field(default_factory=default_labels)
    widths: tuple[int, ...] = (128, 256, 512, 1024)
    log2_lrs: tuple[float, ...] = tuple(float(x) for x in range(-12, -2))
    seeds: int = 3
    n_layers: int = 2
    steps: int = 300
    E: float = 1.5
    A: float = 50.0
    alpha: float = 0.3
    curvature: float = 0.03
    noise: float = 0.005
    diverge_above: float = 2.5
    mult_exponents: dict[str, float] = field(default_factory=default_mult_exponents)
    diverged_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # label -> widths where every run diverges
    sweep: str = "transfer"
    experiment: str = "synthetic"


@dataclass
class NormSpec:
    """A sqrt(η/λ) sweep at fixed sqrt(η·λ) (docs/science.md §5)."""
    labels: tuple[str, ...] = ("mup", "mup+scalar")
    width: int = 256
    product: float = 0.01            # sqrt(η·λ)
    log2_S: tuple[float, ...] = tuple(float(x) for x in range(-3, 4))
    seeds: int = 2
    weight_slope: float = 1.0        # ||W||_rms ∝ S^weight_slope
    loss_curvature: float = 0.02     # loss vs log2 S without multipliers (flat with them)
    noise: float = 0.003
    sweep: str = "sqrt-eta-over-lambda"
    experiment: str = "synthetic"


@dataclass
class FreedomSpec:
    """µP at its default multipliers and at mis-set ones, with and without learnable multipliers
    (docs/science.md §5, first bullet): true loss penalty per (label, setting)."""
    width: int = 128
    seeds: int = 3
    lr: float = 2 ** -7
    penalties: dict = field(default_factory=lambda: {
        ("mup", ()): 0.0, ("mup", (("alpha_emb", 1 / 16),)): 0.05, ("mup", (("wd_mult_hidden", 16.0),)): 0.03,
        ("mup+vector", ()): 0.0, ("mup+vector", (("alpha_emb", 1 / 16),)): 0.005,
        ("mup+vector", (("wd_mult_hidden", 16.0),)): 0.01})
    noise: float = 0.003
    sweep: str = "mis-set-multipliers"
    experiment: str = "synthetic"


@dataclass
class TuningSpec:
    """A µP search sweep (mode 'search') with random LRs, for the tuning-cost curve."""
    label: str = "mup"
    n_trials: int = 30
    width: int = 256
    sweep: str = "mup-tuning"
    experiment: str = "synthetic"


@dataclass
class LadderSpec:
    """Tuning-ladder levels: per level a grid sweep of `parent` and `parent+vector` at one width,
    tuned by the TuningSpec's search (`from_study`) or not; the multipliers change the loss by
    `effects[level]`."""
    width: int = 256
    seeds: int = 3
    parent: str = "mup"
    effects: dict[str, float] = field(default_factory=lambda: {"ladder-none": 0.0, "ladder-tuned": -0.02})
    tuned_gain: float = 0.05         # what tuning takes off the parent's loss
    experiment: str = "synthetic"


def n_params(width: int | np.ndarray, n_layers: int, vocab: int = 256) -> np.ndarray:
    """An approximate parameter count (12·L·d² for the blocks, embedding and head) for synthetic runs."""
    return 12 * n_layers * np.asarray(width, dtype=float) ** 2 + 2 * vocab * np.asarray(width, dtype=float)


def config_defaults() -> dict:
    """Every TrainConfig field with its default, lists/dicts as JSON strings (as MLflow params)."""
    values = TrainConfig().model_dump()
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in values.items()}


def _label_config(label: str) -> dict:
    scheme, _, mult = label.partition("+")
    return {"scheme": scheme, "multipliers": mult or "none", "parametrization": label}


def _ids(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    return [rng.bytes(nbytes).hex() for _ in range(n)]


def _hashes(frame: pd.DataFrame, cols: list[str]) -> list[str]:
    return [f"{h:016x}" for h in pd.util.hash_pandas_object(frame[cols], index=False)]


# ---- the transfer / width sweep ----------------------------------------------------------

def transfer_trials(spec: TransferSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    labels, widths, lrs = list(spec.labels), np.array(spec.widths), np.array(spec.log2_lrs)
    grid = pd.MultiIndex.from_product([labels, widths, lrs, range(spec.seeds)],
                                      names=["parametrization", "d_model", "log2_lr", "seed"]).to_frame(index=False)
    truth_opt = np.array([spec.labels[p].c + spec.labels[p].gamma * math.log2(d / 128)
                          for p, d in zip(grid["parametrization"], grid["d_model"])])
    N = n_params(grid["d_model"].to_numpy(), spec.n_layers)
    offset = grid["parametrization"].map(lambda p: spec.labels[p].offset).to_numpy()
    base = spec.E + spec.A * N ** -spec.alpha + offset
    loss = base + spec.curvature * (grid["log2_lr"].to_numpy() - truth_opt) ** 2
    loss = loss + rng.normal(0, spec.noise, len(grid))
    diverged = grid["log2_lr"].to_numpy() - truth_opt > spec.diverge_above
    for label, sizes in spec.diverged_sizes.items():
        diverged |= (grid["parametrization"].eq(label) & grid["d_model"].isin(sizes)).to_numpy()
    frame = _run_frame(grid, spec, N, loss, diverged, rng)
    truth = {"E": spec.E, "A": spec.A, "alpha": spec.alpha, "offsets": {p: t.offset for p, t in spec.labels.items()},
             "gamma": {p: t.gamma for p, t in spec.labels.items()},
             "log2_opt": {p: {int(d): t.c + t.gamma * math.log2(d / 128) for d in widths}
                          for p, t in spec.labels.items()},
             "mult_exponents": dict(spec.mult_exponents),
             "act_growth": {p: t.act_growth for p, t in spec.labels.items()}}
    return frame, truth


def _run_frame(grid: pd.DataFrame, spec: TransferSpec, N: np.ndarray, loss: np.ndarray,
               diverged: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    frame = grid.copy()
    frame["lr"] = 2.0 ** frame.pop("log2_lr")
    frame["n_layers"] = spec.n_layers
    frame["steps"] = spec.steps
    for key, value in _label_columns(frame["parametrization"]).items():
        frame[key] = value
    frame = _with_run_metrics(frame, N, loss, diverged, rng, spec.steps)
    frame["sweep"], frame["experiment"], frame["mode"] = spec.sweep, spec.experiment, "grid"
    _add_layer_metrics(frame, spec, rng)
    return frame


def _label_columns(labels: pd.Series) -> dict[str, list]:
    configs = [_label_config(p) for p in labels]
    return {"scheme": [c["scheme"] for c in configs], "multipliers": [c["multipliers"] for c in configs]}


def _with_run_metrics(frame: pd.DataFrame, N: np.ndarray, loss: np.ndarray, diverged: np.ndarray,
                      rng: np.random.Generator, steps: int) -> pd.DataFrame:
    tokens = steps * 16 * 128
    frame["outcome"] = np.where(diverged, "diverged", "finished")
    frame["final_val_loss"] = np.where(diverged, np.nan, loss)
    frame["min_val_loss"] = np.where(diverged, LN_VOCAB - 0.5, loss - 0.002)
    frame["final_train_loss"] = np.where(diverged, np.nan, loss + 0.02)
    frame["diverged_at_step"] = np.where(diverged, steps // 3, np.nan)
    frame["n_params"] = N
    frame["tokens"] = float(tokens)
    frame["flops"] = 6.0 * N * tokens
    frame["wall_time_s"] = 1e-7 * N * rng.uniform(0.9, 1.1, len(frame))
    return frame


def _add_layer_metrics(frame: pd.DataFrame, spec: TransferSpec, rng: np.random.Generator) -> None:
    """mult/..., weight_rms/..., eff_rms/..., norm/... last values (columns added in place)."""
    width_ratio = frame["d_model"].to_numpy() / 128
    is_lrm = frame["multipliers"].ne("none").to_numpy()
    S = np.sqrt(frame["lr"].to_numpy() / frame.get("weight_decay", pd.Series(0.1, index=frame.index)).to_numpy())
    n = len(frame)
    columns = {}
    layers = [("embedding", None)] + [(r, b) for b in range(spec.n_layers) for r in HIDDEN_ROLES]
    for role, block in layers:
        layer = role if block is None else f"{role}.{block}"
        mult = (width_ratio ** spec.mult_exponents[role]) * np.exp(rng.normal(0, 0.03, n))
        weight = 0.4 * S * np.exp(rng.normal(0, 0.02, n))
        columns[f"weight_rms/{layer}"] = weight
        columns[f"eff_rms/{layer}"] = np.where(is_lrm, weight * mult, weight)
        columns[f"mult/{layer}/scalar"] = np.where(is_lrm, mult, np.nan)
    head = width_ratio ** spec.mult_exponents["head"] * np.exp(rng.normal(0, 0.03, n))
    columns["norm/final_norm/mean"] = np.where(is_lrm, head, 1.0 + rng.normal(0, 0.01, n))
    columns["weight_rms/head"] = 0.4 * S
    for col, values in columns.items():
        frame[col] = np.where(frame["outcome"].eq("diverged").to_numpy(), np.nan, values)


# ---- the sqrt(η/λ) sweep -----------------------------------------------------------------

def norm_trials(spec: NormSpec, transfer: TransferSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    grid = pd.MultiIndex.from_product([list(spec.labels), list(spec.log2_S), range(spec.seeds)],
                                      names=["parametrization", "log2_S", "seed"]).to_frame(index=False)
    S = 2.0 ** grid.pop("log2_S").to_numpy()
    frame = grid.copy()
    frame["d_model"], frame["n_layers"], frame["steps"] = spec.width, 2, 300
    frame["lr"], frame["weight_decay"] = spec.product * S, spec.product / S
    for key, value in _label_columns(frame["parametrization"]).items():
        frame[key] = value
    is_lrm = frame["multipliers"].ne("none").to_numpy()
    N = n_params(np.full(len(frame), spec.width), 2)
    offset = frame["parametrization"].map(lambda p: transfer.labels.get(p, LabelTruth(0, 0)).offset).to_numpy()
    base = transfer.E + transfer.A * N ** -transfer.alpha + offset + 0.05  # a little off the tuned optimum
    loss = base + np.where(is_lrm, 0.0, spec.loss_curvature * np.log2(S) ** 2) + rng.normal(0, spec.noise, len(frame))
    frame = _with_run_metrics(frame, N, loss, np.zeros(len(frame), bool), rng, 300)
    frame["sweep"], frame["experiment"], frame["mode"] = spec.sweep, spec.experiment, "grid"
    for role in ("embedding",) + HIDDEN_ROLES:
        layer = role if role == "embedding" else f"{role}.0"
        weight = 0.3 * S ** spec.weight_slope * np.exp(rng.normal(0, 0.02, len(frame)))
        mult = 1.0 / S * np.exp(rng.normal(0, 0.02, len(frame)))  # the multiplier compensates
        frame[f"weight_rms/{layer}"] = weight
        frame[f"eff_rms/{layer}"] = np.where(is_lrm, weight * mult, weight)
        frame[f"mult/{layer}/scalar"] = np.where(is_lrm, mult, np.nan)
    truth = {"weight_slope": spec.weight_slope, "eff_slope_lrm": spec.weight_slope - 1.0}
    return frame, truth


# ---- mis-set multipliers ------------------------------------------------------------------

def freedom_trials(spec: FreedomSpec, transfer: TransferSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    rows = [{"parametrization": label, "seed": seed, "alpha_emb": 1.0, "wd_mult_hidden": 1.0, **dict(setting),
             "_penalty": penalty} for (label, setting), penalty in spec.penalties.items() for seed in range(spec.seeds)]
    frame = pd.DataFrame(rows)
    frame["d_model"], frame["n_layers"], frame["steps"], frame["lr"] = spec.width, 2, 300, spec.lr
    for key, value in _label_columns(frame["parametrization"]).items():
        frame[key] = value
    N = n_params(np.full(len(frame), spec.width), 2)
    loss = transfer.E + transfer.A * N ** -transfer.alpha + frame.pop("_penalty").to_numpy()
    frame = _with_run_metrics(frame, N, loss + rng.normal(0, spec.noise, len(frame)), np.zeros(len(frame), bool), rng, 300)
    frame["sweep"], frame["experiment"], frame["mode"] = spec.sweep, spec.experiment, "grid"
    return frame, {"penalties": dict(spec.penalties)}


# ---- a µP search (tuning) sweep -----------------------------------------------------------

def tuning_trials(spec: TuningSpec, transfer: TransferSpec, rng: np.random.Generator) -> pd.DataFrame:
    t = transfer.labels.get(spec.label, LabelTruth(c=-7.3, gamma=0.0))
    log2_lr = rng.uniform(-12, -4, spec.n_trials)
    opt = t.c + t.gamma * math.log2(spec.width / 128)
    N = n_params(np.full(spec.n_trials, spec.width), transfer.n_layers)
    loss = (transfer.E + transfer.A * N ** -transfer.alpha + t.offset
            + transfer.curvature * (log2_lr - opt) ** 2 + rng.normal(0, transfer.noise, spec.n_trials))
    frame = pd.DataFrame({"parametrization": spec.label, "d_model": spec.width, "seed": 0,
                          "lr": 2.0 ** log2_lr, "n_layers": transfer.n_layers, "steps": transfer.steps,
                          "alpha_out": 2.0 ** rng.uniform(-2, 2, spec.n_trials)})
    for key, value in _label_columns(frame["parametrization"]).items():
        frame[key] = value
    frame = _with_run_metrics(frame, N, loss, log2_lr - opt > transfer.diverge_above, rng, transfer.steps)
    frame["sweep"], frame["experiment"], frame["mode"] = spec.sweep, spec.experiment, "search"
    return frame


def ladder_trials(spec: LadderSpec, tuning: TuningSpec, transfer: TransferSpec,
                  rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    parts = []
    for level, effect in spec.effects.items():
        tuned = level != "ladder-none"
        labels = [spec.parent, f"{spec.parent}+vector"]
        grid = pd.MultiIndex.from_product([labels, range(spec.seeds)], names=["parametrization", "seed"]
                                          ).to_frame(index=False)
        N = n_params(np.full(len(grid), spec.width), transfer.n_layers)
        loss = (transfer.E + transfer.A * N ** -transfer.alpha - (spec.tuned_gain if tuned else 0.0)
                + np.where(grid["parametrization"].str.contains("+", regex=False), effect, 0.0)
                + rng.normal(0, transfer.noise, len(grid)))
        frame = grid.assign(d_model=spec.width, n_layers=transfer.n_layers, steps=transfer.steps)
        for key, value in _label_columns(frame["parametrization"]).items():
            frame[key] = value
        frame = _with_run_metrics(frame, N, loss, np.zeros(len(grid), bool), rng, transfer.steps)
        frame["sweep"], frame["experiment"], frame["mode"] = level, spec.experiment, "grid"
        frame["from_study"] = tuning.sweep if tuned else None
        parts.append(frame)
    return pd.concat(parts, ignore_index=True), {"effects": dict(spec.effects)}


# ---- assembling Tables ----------------------------------------------------------------------

def _finish_trials(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    defaults = config_defaults()
    frame = frame.reset_index(drop=True)
    config_cols = [c for c in defaults if c in frame.columns]
    frame["trial_hash"] = _hashes(frame, ["sweep", "parametrization"] + config_cols)
    frame["run_id"] = _ids(rng, len(frame), 16)
    frame["run_status"] = "FINISHED"
    start = pd.Timestamp("2026-01-01")  # naive UTC, as read from MLflow
    frame["start_time"] = start + pd.to_timedelta(np.arange(len(frame)) * 60, unit="s")
    frame["end_time"] = frame["start_time"] + pd.to_timedelta(frame["wall_time_s"], unit="s")
    missing = {k: v for k, v in defaults.items() if k not in frame.columns}
    frame = pd.concat([frame, pd.DataFrame(missing, index=frame.index)], axis=1)
    for key, value in defaults.items():  # sweeps that did not set a key ran with its default
        if value is not None and frame[key].isna().any():
            frame[key] = frame[key].fillna(value)
    return frame


def _parent_runs(frame: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, list[dict]]:
    sweeps = []
    parent = {}
    for (experiment, sweep) in frame[["experiment", "sweep"]].drop_duplicates().itertuples(index=False):
        run_id = rng.bytes(16).hex()
        parent[(experiment, sweep)] = run_id
        sweeps.append({"experiment": experiment, "sweep": sweep, "run_id": run_id, "run_name": sweep})
    frame["parent_run_id"] = [parent[k] for k in zip(frame["experiment"], frame["sweep"])]
    return frame, sweeps


def synthetic_tables(seed: int = 0, transfer: TransferSpec | None = None,
                     norms: NormSpec | None = None, tuning: TuningSpec | None = None,
                     history: bool = True, coord_steps: int = 5,
                     freedom: FreedomSpec | None = None, ladder: LadderSpec | None = None) -> tuple[Tables, dict]:
    """A whole experiment: a transfer/width sweep, optionally a sqrt(η/λ) sweep, a µP search
    sweep and a mis-set-multiplier sweep. Returns the tables and the ground truth."""
    rng = np.random.default_rng(seed)
    transfer = transfer or TransferSpec()
    parts, truth = [], {}
    frame, truth["transfer"] = transfer_trials(transfer, rng)
    parts.append(frame)
    if norms is not None:
        frame, truth["norms"] = norm_trials(norms, transfer, rng)
        parts.append(frame)
    if tuning is not None:
        parts.append(tuning_trials(tuning, transfer, rng))
    if freedom is not None:
        frame, truth["freedom"] = freedom_trials(freedom, transfer, rng)
        parts.append(frame)
    if ladder is not None:
        frame, truth["ladder"] = ladder_trials(ladder, tuning or TuningSpec(), transfer, rng)
        parts.append(frame)
    trials = _finish_trials(pd.concat(parts, ignore_index=True), rng)
    trials, sweeps = _parent_runs(trials, rng)
    params = list(config_defaults()) + ["parametrization"]
    trials = order_columns(trials, params)
    hist = history_rows(trials, transfer, rng, coord_steps) if history else empty_history()
    meta = {"source": "synthetic", "experiments": sorted(trials["experiment"].unique()),
            "sweeps": sweeps, "param_columns": params}
    return Tables(trials=trials, history=hist, multipliers=multiplier_rows(trials), meta=meta), truth


def history_rows(trials: pd.DataFrame, spec: TransferSpec, rng: np.random.Generator,
                 coord_steps: int = 5) -> pd.DataFrame:
    """Training curves (val_loss, train_loss, tokens every 50 steps) and the coordinate check
    (act/... over the first `coord_steps` steps) of every run."""
    parts = [_curves(trials), _coord_check(trials, spec, rng, coord_steps)]
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return frame if len(frame) else empty_history()


def _curves(trials: pd.DataFrame) -> pd.DataFrame:
    steps = np.arange(0, 301, 50)
    n, m = len(trials), len(steps)
    final = trials["final_val_loss"].fillna(LN_VOCAB).to_numpy()[:, None]
    val = final + (LN_VOCAB - final) * np.exp(-steps[None, :] / 60.0)
    tokens = np.broadcast_to(steps[None, :] * 16 * 128, (n, m)).astype(float)
    blocks = []
    series = [("val_loss", val), ("train_loss", val + 0.02), ("tokens", tokens)]
    # learned multipliers move from 1 to their final value, relatively faster at larger width
    rate = 1e-3 * (trials["d_model"].to_numpy(dtype=float)[:, None] / 128) ** 0.3
    for col in (c for c in trials.columns if c.startswith("mult/") and c.endswith("/scalar")):
        final_mult = np.abs(trials[col].to_numpy(dtype=float))[:, None]
        series.append((col, final_mult * np.exp(rate * (steps[None, :] - steps[-1]))))
    for key, values in series:
        keep = np.isfinite(values).all(axis=1)
        blocks.append(pd.DataFrame({"run_id": np.repeat(trials["run_id"].to_numpy()[keep], m),
                                    "trial_hash": np.repeat(trials["trial_hash"].to_numpy()[keep], m),
                                    "key": key, "step": np.tile(steps, int(keep.sum())), "value": values[keep].ravel()}))
    return pd.concat(blocks, ignore_index=True)


def _coord_check(trials: pd.DataFrame, spec: TransferSpec, rng: np.random.Generator,
                 coord_steps: int) -> pd.DataFrame:
    if coord_steps <= 0:
        return pd.DataFrame()
    names = ["embedding"] + [f"block.{i}" for i in range(spec.n_layers)] + ["logits"]
    growth = trials["parametrization"].map(lambda p: spec.labels.get(p, LabelTruth(0, 0)).act_growth).to_numpy()
    ratio = trials["d_model"].to_numpy() / 128
    steps = np.arange(1, coord_steps + 1)
    blocks = []
    for j, name in enumerate(names):
        exponent = growth[:, None] * steps[None, :] / coord_steps
        values = (1.0 + j) * ratio[:, None] ** exponent * np.exp(rng.normal(0, 0.02, (len(trials), len(steps))))
        blocks.append(pd.DataFrame({"run_id": np.repeat(trials["run_id"].to_numpy(), len(steps)),
                                    "trial_hash": np.repeat(trials["trial_hash"].to_numpy(), len(steps)),
                                    "key": f"act/{name}", "step": np.tile(steps, len(trials)),
                                    "value": values.ravel()}))
    return pd.concat(blocks, ignore_index=True)


def multiplier_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """multipliers.csv rows (one per layer) of every finished run with learnable multipliers."""
    cols = [c for c in trials.columns if c.startswith("mult/") and c.endswith("/scalar")]
    runs = trials[trials["multipliers"].ne("none") & trials["outcome"].eq("finished")]
    if runs.empty or not cols:
        return empty_multipliers()
    long = runs.melt(id_vars=["run_id", "trial_hash"], value_vars=cols, var_name="metric", value_name="mean").dropna()
    long["layer"] = long.pop("metric").str.split("/").str[1].astype("str")
    parts = long["layer"].str.partition(".")
    long["role"] = parts[0].astype("str")
    long["block"] = pd.to_numeric(parts[2].replace("", np.nan))
    long["kind"] = "scalar"
    long["rms"] = long["mean"].abs()
    long["min"] = long["mean"]
    long["max"] = long["mean"]
    long["size"] = 1.0
    return long[["run_id", "trial_hash", "layer", "role", "block", "kind", "mean", "rms", "min", "max", "size"]].reset_index(drop=True)


def figure_hard_cases(seed: int = 0) -> dict[str, Tables]:
    """Worlds that have broken figures before (tests/test_figure_lint.py): `full` (every sweep,
    so many panels and long group labels), `flat` (every exponent 0 and flat norms: narrow log
    ranges), `one_width` (one width; a search sweep of a single run) and `absent` (a width where
    every run diverged: a series with no finite point; a search of 3 runs: a
    narrow compute axis; two depths with the same loss: a flat optimum vs depth), `ladder` (a
    tuning ladder: an untuned and a tuned level with their search) and `ladder_one_seed` (one
    seed, no interval; the search not in the tables, so its cost is unknown)."""
    flat_labels = {"sp": LabelTruth(c=-6.6, gamma=0.0, offset=0.02),
                   "mup": LabelTruth(c=-7.3, gamma=0.0), "mup+scalar": LabelTruth(c=-7.1, gamma=0.0)}
    flat = TransferSpec(labels=flat_labels, mult_exponents={role: 0.0 for role in default_mult_exponents()}, seeds=2)
    return {
        "full": synthetic_tables(seed, norms=NormSpec(), tuning=TuningSpec(), freedom=FreedomSpec())[0],
        "flat": synthetic_tables(seed, transfer=flat, tuning=TuningSpec(n_trials=8),
                                 norms=NormSpec(weight_slope=0.0, loss_curvature=0.0, seeds=1))[0],
        "one_width": synthetic_tables(seed, transfer=TransferSpec(widths=(256,), seeds=2), tuning=TuningSpec(n_trials=1),
                                      freedom=FreedomSpec(seeds=2))[0],
        "ladder": synthetic_tables(seed, tuning=TuningSpec(n_trials=12), ladder=LadderSpec(effects={
            "ladder-none": 0.0, "ladder-lr": -0.02, "ladder-lr-wd": 0.005, "ladder-all": -0.015}))[0],
        "ladder_one_seed": synthetic_tables(seed, ladder=LadderSpec(seeds=1))[0],
        "absent": _odd_seeds_deeper(synthetic_tables(
            seed, transfer=TransferSpec(seeds=2, diverged_sizes={"mup+scalar": (1024,)}), tuning=TuningSpec(n_trials=3),
            coord_steps=2)[0]),
    }


def _odd_seeds_deeper(tables: Tables, n_layers: int = 4) -> Tables:
    """The odd seeds' grid runs relabelled to another depth, so the depth transfer runs too; the
    loss does not depend on depth here, so the optimum vs depth is flat."""
    trials = tables.trials.copy()
    trials.loc[trials["seed"].mod(2).eq(1) & trials["mode"].eq("grid"), "n_layers"] = n_layers
    return dataclasses.replace(tables, trials=trials)


def benchmark_tables(n_trials: int = 10_000, seed: int = 0) -> tuple[Tables, dict]:
    """About `n_trials` trials: the transfer sweep's seed count is chosen to reach it."""
    spec = TransferSpec(widths=(128, 256, 512, 1024, 2048, 4096), log2_lrs=tuple(float(x) for x in range(-15, -1)))
    cells = len(spec.labels) * len(spec.widths) * len(spec.log2_lrs)
    spec.seeds = max(1, round(n_trials / cells))
    return synthetic_tables(seed, transfer=spec, norms=NormSpec(), tuning=TuningSpec())
