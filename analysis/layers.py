"""Per-layer metric columns (mult/<layer>/<stat>, weight_rms/<layer>, eff_rms/<layer>) gathered
into one value per run and role: the geometric mean over blocks of |value|, so a power law in
width survives the aggregation (the log of a geometric mean is the mean of the logs)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

LAYER = re.compile(r"^(?P<role>[a-z_]+?)(?:\.(?P<block>\d+))?$")


def parse_layer(layer: str) -> tuple[str, int | None]:
    match = LAYER.match(layer)
    if not match:
        return layer, None
    block = match.group("block")
    return match.group("role"), None if block is None else int(block)


def layer_columns(frame: pd.DataFrame, prefix: str, stat: str | None = None) -> dict[str, list[str]]:
    """role -> columns `prefix/<layer>[/stat]`, e.g. prefix 'mult', stat 'scalar'."""
    out: dict[str, list[str]] = {}
    for col in frame.columns:
        parts = col.split("/")
        if parts[0] != prefix or len(parts) != (3 if stat else 2) or (stat and parts[2] != stat):
            continue
        role, _ = parse_layer(parts[1])
        out.setdefault(role, []).append(col)
    return out


def geometric_mean(values: pd.DataFrame) -> np.ndarray:
    """Row-wise geometric mean of |values| over the present, non-zero entries (NaN if none)."""
    arr = np.abs(values.to_numpy(dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(arr > 0, np.log(arr), np.nan)
    count = np.isfinite(logs).sum(1)
    total = np.where(np.isfinite(logs), logs, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.exp(total / count), np.nan)


def role_values(frame: pd.DataFrame, prefix: str, stat: str | None = None) -> dict[str, np.ndarray]:
    """role -> one value per row of `frame` (geometric mean over the role's blocks)."""
    return {role: geometric_mean(frame[cols]) for role, cols in sorted(layer_columns(frame, prefix, stat).items())}


def block_product(frame: pd.DataFrame, left: str, right: str, stat: str) -> np.ndarray | None:
    """Per row, the geometric mean over blocks of mult(left.i)·mult(right.i), e.g. the q·k
    product of attention multipliers that scales the attention logits."""
    pairs = []
    for col in layer_columns(frame, "mult", stat).get(left, []):
        layer = col.split("/")[1]
        _, block = parse_layer(layer)
        other = f"mult/{right}{'' if block is None else f'.{block}'}/{stat}"
        if other in frame.columns:
            pairs.append(frame[col].to_numpy(dtype=float) * frame[other].to_numpy(dtype=float))
    if not pairs:
        return None
    return geometric_mean(pd.DataFrame(np.stack(pairs, 1)))
