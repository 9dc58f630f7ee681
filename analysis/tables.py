"""Tidy tables of a set of sweeps, and their one-file Parquet snapshot.

`Tables` holds three pandas DataFrames:
- `trials`: one row per child trial run; every param as a typed column, the run's identity
  (run_id, experiment, sweep, trial_hash, parametrization, outcome, mode, start_time and
  end_time in UTC, ...) and the last value of every metric (final_val_loss, mult/...,
  weight_rms/..., ...; a metric named like a param, i.e. `lr`, becomes `last_lr`);
- `history`: long table (run_id, trial_hash, key, step, value) of every metric history;
- `multipliers`: long table from each run's multipliers.csv artifact
  (run_id, trial_hash, layer, role, block, kind, mean, rms, min, max, size).

Snapshot format (`save`/`load`): ONE Parquet file. Column `table` says which table a row
belongs to ("trials", "history", "multipliers"); every other column is named
`<table>:<column>` and is null on the other tables' rows. Each table is written in its own
row groups, so reading one table back (column projection + a filter on `table`) touches only
its own data. The schema metadata key `scalelab.tables` holds JSON: the format version, each
table's column order and `meta` (experiments, sweeps and their parent run ids, param columns).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from trainer.config import UserError

from .columns import IDENTITY_COLUMNS, empty_history, empty_multipliers

TABLE_NAMES = ("trials", "history", "multipliers")
METADATA_KEY = b"scalelab.tables"
FORMAT_VERSION = 1


@dataclass
class Tables:
    trials: pd.DataFrame
    history: pd.DataFrame = field(default_factory=empty_history)
    multipliers: pd.DataFrame = field(default_factory=empty_multipliers)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def param_columns(self) -> list[str]:
        """Config columns (params) of `trials`, in the order they were read."""
        known = self.meta.get("param_columns")
        if known is not None:
            return [c for c in known if c in self.trials.columns]
        return [c for c in self.trials.columns
                if c not in IDENTITY_COLUMNS and "/" not in c and not c.startswith("final_")]

    @property
    def experiments(self) -> list[str]:
        return list(self.meta.get("experiments") or sorted(self.trials.get("experiment", pd.Series()).dropna().unique()))

    @classmethod
    def from_mlflow(cls, experiments: list[str], tracking_uri: str, *, history: bool = True,
                    artifacts: bool = True, progress: Callable[[str], None] | None = None) -> "Tables":
        from .mlflow_read import read_experiments  # mlflow is heavy: import on use
        return cls(**read_experiments(experiments, tracking_uri, history=history,
                                      artifacts=artifacts, progress=progress))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the snapshot atomically (a temp file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        _write_snapshot(self, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tables":
        return _read_snapshot(Path(path))


def _arrow_tables(tables: Tables) -> dict[str, "pa.Table"]:
    import pyarrow as pa  # pyarrow: only snapshots need it (a second to import)
    frames = {"trials": tables.trials, "history": tables.history, "multipliers": tables.multipliers}
    return {name: pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
            for name, df in frames.items()}


def _write_snapshot(tables: Tables, path: Path) -> None:
    import pyarrow as pa  # see _arrow_tables
    import pyarrow.parquet as pq

    arrow = _arrow_tables(tables)
    fields = [pa.field("table", pa.string())]
    for name, tab in arrow.items():
        fields += [pa.field(f"{name}:{f.name}", f.type) for f in tab.schema]
    info = {"format": FORMAT_VERSION, "meta": tables.meta,
            "columns": {name: tab.column_names for name, tab in arrow.items()}}
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(info, default=str).encode()})
    null_cache: dict[tuple[str, int], pa.Array] = {}  # one shared all-null array per (type, length)
    with pq.ParquetWriter(path, schema) as writer:
        for name, tab in arrow.items():
            for batch in tab.to_batches(max_chunksize=250_000):
                columns = []
                for f in schema:
                    if f.name == "table":
                        columns.append(pa.array([name] * batch.num_rows, pa.string()))
                    elif f.name.startswith(name + ":"):
                        columns.append(batch.column(f.name.split(":", 1)[1]))
                    else:
                        key = (str(f.type), batch.num_rows)
                        if key not in null_cache:
                            null_cache[key] = pa.nulls(batch.num_rows, f.type)
                        columns.append(null_cache[key])
                writer.write_batch(pa.record_batch(columns, schema=schema))


def _read_snapshot(path: Path) -> Tables:
    import pyarrow.parquet as pq  # see _arrow_tables

    if not path.exists():
        raise UserError(f"{path}: snapshot file not found (write one with `scalelab export EXPERIMENT {path.name}`)")
    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise UserError(f"{path}: a Parquet file, but not a scalelab snapshot (no '{METADATA_KEY.decode()}' "
                        "metadata); write snapshots with `scalelab export EXPERIMENT FILE.parquet`")
    info = json.loads(raw)
    if info.get("format") != FORMAT_VERSION:
        raise UserError(f"{path}: snapshot format {info.get('format')} is not supported by this "
                        f"version of scalelab (it reads format {FORMAT_VERSION}); re-export it")
    frames = {}
    for name in TABLE_NAMES:
        cols = info["columns"].get(name, [])
        prefixed = [f"{name}:{c}" for c in cols]
        tab = pq.read_table(path, columns=prefixed, filters=[("table", "=", name)])
        frames[name] = tab.rename_columns(cols).to_pandas()
    return Tables(trials=frames["trials"], history=frames["history"],
                  multipliers=frames["multipliers"], meta=info.get("meta") or {})
