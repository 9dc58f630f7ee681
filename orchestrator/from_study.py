""""Tune small, transfer wide": read the best parameters of a finished Optuna study so a grid
sweep can take them by reference (`base: {from_study: {storage, study, keys}}`)."""
from __future__ import annotations

import logging
import os
from typing import Any

from trainer.config import ConfigError

from .layout import sqlite_path


def best_params(storage: str, study: str, keys: list[str] | None, where: str) -> dict[str, Any]:
    """The best trial's parameters of `study` (all, or only `keys`). `where` prefixes errors
    ('sweeps/x.yaml: base.from_study (line 4)')."""
    path = sqlite_path(storage)
    # Optuna would silently create an empty database for a mistyped path: check first.
    if path is not None and not os.path.isfile(path):
        raise ConfigError(
            f"{where}: optuna storage {storage!r} does not exist (no file {os.path.abspath(path)}); "
            "run the tuning sweep first (scalelab run <search sweep>.yaml) or fix the path — "
            "relative sqlite paths are relative to the working directory")
    import optuna  # seconds to import: only a sweep with from_study needs it

    optuna.logging.set_verbosity(logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as err:  # bad URL, unreachable server, not an optuna database
        raise ConfigError(f"{where}: cannot open optuna storage {storage!r}: {err}") from None
    if study not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"{where}: no study named {study!r} in {storage!r} (studies there: {listed})")
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
