"""Optuna search mode: Ray Tune's OptunaSearch over the sweep's `search.space`, with the study
kept at `Locations.study_url` so a rerun continues the same study.

Ray's OptunaSearch takes an optuna `BaseStorage` and a study name and opens the study with
`load_if_exists=True`; we only add what it lacks: re-queueing the points that an interrupted
run left RUNNING (so they resume from their checkpoints), and counting how many samples are
still owed.
"""
from __future__ import annotations

import logging

from trainer.config import ConfigError

from .trial import OBJECTIVE_KEY
from .uri_auth import redact, redact_text


def open_storage(url: str):
    import optuna  # here and below: seconds to import, which `plan` and `validate` do not need

    optuna.logging.set_verbosity(logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # bad URL, unreachable database, not an optuna schema
        raise ConfigError(f"search.storage: cannot open optuna storage {redact(url)!r}: {redact_text(str(err), url)}; "
                          "use an SQLAlchemy URL such as sqlite:///optuna.db") from None


def requeue_interrupted(storage, name: str, direction: str) -> tuple[int, int]:
    """Trials left RUNNING by a killed driver: mark them failed and ask for the same point
    again (same trial hash, so it resumes from its checkpoint). Returns how many, and how many
    trials the study had."""
    import optuna  # a second to import: only search sweeps need it
    from optuna.trial import TrialState

    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    study_id = storage.get_study_id_from_name(name)
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    waiting = [t.system_attrs.get("fixed_params", t.params)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for t in stale:
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                       TrialState.FAIL)
        if t.params and t.params not in waiting:
            study.enqueue_trial(t.params)
            waiting.append(t.params)
    return len(stale), len(study.get_trials(deepcopy=False))


def make_searcher(search, study_url: str):
    """An OptunaSearch on the persistent study of `search` (a SearchSpec) at `study_url`, stale
    trials re-queued first. Returns it and how many were re-queued."""
    from ray.tune.search.optuna import OptunaSearch  # Ray Tune: only `run` of a search sweep

    storage = open_storage(study_url)
    direction = "minimize" if search.mode == "min" else "maximize"
    requeued, n_before = requeue_interrupted(storage, search.study_name, direction)
    seed = search.sampler_seed
    if seed is not None:
        # A rerun with the same seed would propose the first run's points again; shifting it by
        # the study's size keeps the search reproducible and new.
        seed += n_before
    searcher = OptunaSearch(space=dict(search.space), metric=OBJECTIVE_KEY, mode=search.mode,
                            study_name=search.study_name, storage=storage, seed=seed)
    return searcher, requeued
