"""Optuna search mode: Ray Tune's OptunaSearch over the sweep's `search.space`, with the study
kept in `search.storage` so a rerun continues the same study.

Ray's OptunaSearch takes an optuna `BaseStorage` and a study name and opens the study with
`load_if_exists=True`; we only add what it lacks: the storage default, re-queueing the points
that an interrupted run left RUNNING (so they resume from their checkpoints), and counting
how many samples are still owed.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from trainer.config import ConfigError


def storage_url(spec, storage_dir: str) -> str:
    """The study's storage: the sweep's `search.storage`, else an SQLite file in the sweep
    storage directory (persistent either way)."""
    url = getattr(spec.search, "storage", None)
    if url:
        return url
    return "sqlite:///" + os.path.abspath(os.path.join(storage_dir, "optuna.db"))


def study_name(spec) -> str:
    return getattr(spec.search, "study_name", None) or spec.name


def optuna_space(spec) -> dict[str, Any]:
    """Optuna distributions for the space (the spec may hold file entries or distributions)."""
    from optuna.distributions import BaseDistribution

    from .search_space import to_optuna

    return {key: dist if isinstance(dist, BaseDistribution) else to_optuna(dist)
            for key, dist in spec.search.space.items()}


def open_storage(url: str):
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # bad URL, unreachable database, not an optuna schema
        raise ConfigError(f"search.storage: cannot open optuna storage {url!r}: {err}; "
                          "use an SQLAlchemy URL such as sqlite:///optuna.db") from None


def requeue_interrupted(storage, name: str, direction: str) -> tuple[int, int]:
    """Trials left RUNNING by a killed driver: mark them failed and ask for the same point
    again (same trial hash, so it resumes from its checkpoint). Returns how many, and how many
    trials the study had."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    waiting = [t.system_attrs.get("fixed_params", t.params)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for t in stale:
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params and t.params not in waiting:
            study.enqueue_trial(t.params)
            waiting.append(t.params)
    return len(stale), len(study.get_trials(deepcopy=False))


def make_searcher(spec, storage_dir: str, objective_key: str = "objective"):
    """An OptunaSearch on the persistent study (stale trials re-queued first)."""
    from ray.tune.search.optuna import OptunaSearch

    url = storage_url(spec, storage_dir)
    storage = open_storage(url)
    name = study_name(spec)
    direction = "minimize" if spec.search.mode == "min" else "maximize"
    requeued, n_before = requeue_interrupted(storage, name, direction)
    seed = getattr(spec.search, "sampler_seed", None)
    if seed is not None:
        # A rerun with the same seed would propose the first run's points again; shifting it by
        # the study's size keeps the search reproducible and new.
        seed += n_before
    searcher = OptunaSearch(space=optuna_space(spec), metric=objective_key, mode=spec.search.mode,
                            study_name=name, storage=storage, seed=seed)
    return searcher, url, requeued
