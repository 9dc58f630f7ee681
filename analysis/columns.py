"""The columns of the three tables (trials, history, multipliers): the one schema that the
MLflow reader, the snapshot and the synthetic sweeps all build."""
from __future__ import annotations

import pandas as pd

from orchestrator.layout import MULTIPLIER_COLUMNS as MULTIPLIER_CSV_COLUMNS

HISTORY_COLUMNS = ["run_id", "trial_hash", "key", "step", "value"]
MULTIPLIER_COLUMNS = ["run_id", "trial_hash", *MULTIPLIER_CSV_COLUMNS]  # each run's multipliers.csv
MULTIPLIER_NUMBERS = ("mean", "rms", "min", "max", "size")
# Columns of `trials` that describe the run rather than its config or its metrics.
IDENTITY_COLUMNS = ["run_id", "experiment", "sweep", "trial_hash", "parametrization", "label", "outcome",
                    "mode", "error", "code_version", "from_study", "parent_run_id", "run_status",
                    "start_time", "end_time"]


def empty_history() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series(dtype="str"), "trial_hash": pd.Series(dtype="str"),
                         "key": pd.Series(dtype="str"), "step": pd.Series(dtype="int64"),
                         "value": pd.Series(dtype="float64")})


def empty_multipliers() -> pd.DataFrame:
    cols: dict[str, pd.Series] = {c: pd.Series(dtype="str") for c in MULTIPLIER_COLUMNS[:4]}
    cols["block"] = pd.Series(dtype="float64")
    cols["kind"] = pd.Series(dtype="str")
    cols.update({c: pd.Series(dtype="float64") for c in MULTIPLIER_NUMBERS})
    return pd.DataFrame(cols)


def order_columns(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Identity columns, then params, then run-level metrics, then per-layer metrics."""
    ident = [c for c in IDENTITY_COLUMNS if c in frame.columns]
    param_cols = [c for c in params if c in frame.columns and c not in ident]
    rest = [c for c in frame.columns if c not in ident and c not in param_cols]
    final = sorted(c for c in rest if "/" not in c)
    layered = sorted(c for c in rest if "/" in c)
    return frame[ident + param_cols + final + layered]
