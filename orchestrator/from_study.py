""""Tune small, transfer wide": read the best parameters of a finished Optuna study so a grid
sweep can take them by reference (`base: {from_study: {storage, study, keys}}`)."""
from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from trainer.config import ConfigError

from .layout import sqlite_path
from .uri_auth import redact


def _has_optuna_tables(path: str) -> bool:
    """Whether the SQLite file holds Optuna's tables, read without writing (mode=ro)."""
    try:
        with sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone() is not None
    except sqlite3.Error:
        return False


def best_params(storage: str, study: str, keys: list[str] | None, where: str,
                assumed: bool = False) -> dict[str, Any]:
    """The best trial's parameters of `study` (all, or only `keys`). `where` prefixes errors
    ('sweeps/x.yaml: base.from_study (line 4)'); `assumed`: the storage is the default place,
    not one the file names (errors then say how to name another)."""
    path = sqlite_path(storage)
    shown = redact(storage)
    hint = " (the default place of a search sweep's study; give from_study.storage if it is elsewhere)" if assumed else ""
    # Optuna would silently create an empty database for a mistyped path: check first.
    if path is not None and not os.path.isfile(path):
        raise ConfigError(
            f"{where}: optuna storage {shown!r}{hint} does not exist (no file {os.path.abspath(path)}); "
            "run the tuning sweep first (scalelab run <search sweep>.yaml) or fix the path — "
            "relative sqlite paths are relative to the working directory")
    # ... and would add its tables to any other SQLite database (an MLflow one, say): look first.
    if path is not None and not _has_optuna_tables(path):
        raise ConfigError(f"{where}: {os.path.abspath(path)}{hint} is not an Optuna study database (no 'studies' "
                          "table); point from_study.storage at the search sweep's study (sqlite:///.../optuna.db)")
    import optuna  # seconds to import: only a sweep with from_study needs it

    optuna.logging.set_verbosity(logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as err:  # bad URL, unreachable server, not an optuna database
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]  # SQLAlchemy adds lines and the URL
        raise ConfigError(f"{where}: cannot open optuna storage {shown!r}: {redact(first)}") from None
    if study not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"{where}: no study named {study!r} in {shown!r}{hint} (studies there: {listed})")
    loaded = optuna.load_study(study_name=study, storage=storage)
    try:
        best = loaded.best_trial
    except (ValueError, RuntimeError) as err:  # no completed trial yet, or a multi-objective study
        raise ConfigError(f"{where}: study {study!r} has no best trial yet ({err}); "
                          "let the tuning sweep finish at least one trial") from None
    params = dict(best.params)
    if keys is None:
        return params
    missing = [k for k in keys if k not in params]
    if missing:
        raise ConfigError(f"{where}: study {study!r} did not tune {missing}; "
                          f"its parameters are {sorted(params)}")
    return {k: params[k] for k in keys}
