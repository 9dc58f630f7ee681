"""Optuna trial -> MLflow run: the user attribute `mlflow_run_id` (RUN_ID_ATTR) on each trial of a
search sweep's study, so optuna-dashboard shows which MLflow run a trial is. Written here only,
through Optuna's public storage API. The other way, each MLflow trial run gets the study's name
and the trial's number as tags (TAG_OPTUNA_STUDY, TAG_OPTUNA_TRIAL)."""
from __future__ import annotations

import threading

from optuna.trial import TrialState
from ray import tune

from .layout import TAG_OPTUNA_STUDY, TAG_OPTUNA_TRIAL
from .search import open_storage
from .trial import REPORT_KEY
from .uri_auth import redact_text

RUN_ID_ATTR = "mlflow_run_id"


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def link_trial_to_run(storage, study_name: str, params: dict, run_id: str) -> int | None:
    """Set RUN_ID_ATTR to `run_id` on the study's RUNNING trial whose params are `params` (a
    finished Optuna trial can no longer be changed); that trial's number, None when there is none."""
    study_id = storage.get_study_id_from_name(study_name)
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.params and all(_same(params.get(k), v) for k, v in trial.params.items()):
            if trial.user_attrs.get(RUN_ID_ATTR) != run_id:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                storage.set_trial_user_attr(trial_id, RUN_ID_ATTR, run_id)
            return trial.number
    return None


# How long Tune's loop waits, at a trial's final report, for that trial's link to be made (its
# run is created by the outbox's thread): Optuna marks the trial finished right after, and a
# finished trial takes no user attribute. Longer only during an MLflow outage: then it gives up.
LINK_WAIT_S = 30.0


class StudyRunLinker(tune.Callback):
    """Driver-side, after the MLflow tracking callback (it creates the child run on trial start):
    links the study's RUNNING trial whose params are this Tune trial's sampled values to the
    trial's MLflow run, and tags the run with the study and trial number, on start. Matching by
    params, not by the searcher's objects: Tune may work on copies of them.

    The link is made in the outbox's order (after the run exists), so it can lag the trial.
    Tune gives every result to the callbacks before it tells the searcher the trial is
    complete (TuneController._process_trial_result, then stop_trial): at the final report this
    callback waits for the link, so no short trial finishes unlinked (measured: through an
    MLflow server on PostgreSQL, some did)."""

    def __init__(self, study_url: str, study_name: str, tracking):
        self.study_url, self.study_name, self.tracking = study_url, study_name, tracking
        self._storage = None
        self._linked: dict[str, threading.Event] = {}   # Tune trial id -> set once its link was tried

    def __getstate__(self):  # Tune copies its callbacks before any trial: no events or storage to carry
        return {**self.__dict__, "_storage": None, "_linked": {}}

    def on_trial_start(self, iteration, trials, trial, **info):
        recs = self.tracking.records.get(trial.trial_id)
        if not recs:
            return
        rec = recs[0]  # a search sample is never a fused pack
        # the child run is created by the tracking callback's outbox: link once it exists
        config, done = dict(trial.config), self._linked.setdefault(trial.trial_id, threading.Event())
        done.clear()
        self.tracking.after_writes(lambda: self._link(config, rec, done))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        done = self._linked.get(trial.trial_id)
        if done is None or done.is_set() or not ((result.get(REPORT_KEY) or {}).get("metrics") or {}).get("final"):
            return
        if not done.wait(LINK_WAIT_S):
            print(f"note: Optuna trial of {trial.trial_id} not linked to its MLflow run: MLflow did not answer "
                  f"within {LINK_WAIT_S:.0f} s, and Optuna closes the trial now (the run's params still match it)")

    def _link(self, config: dict, rec, done: threading.Event) -> None:
        try:
            if rec.child is not None:
                self._link_run(config, rec)
        finally:
            done.set()

    def _link_run(self, config: dict, rec) -> None:
        try:
            if self._storage is None:
                self._storage = open_storage(self.study_url)
            number = link_trial_to_run(self._storage, self.study_name, config, rec.child.run_id)
            if number is not None:
                self.tracking.tag_run(rec, {TAG_OPTUNA_STUDY: self.study_name, TAG_OPTUNA_TRIAL: str(number)})
        except Exception as err:  # noqa: BLE001 - a missing link must not stop the sweep
            print(f"note: could not link Optuna trial to MLflow run {rec.child.run_id}: "
                  f"{redact_text(str(err), self.study_url)}")


def study_links(mode, tracking) -> list:
    """For a search sweep: the Tune callback that links each Optuna trial to its MLflow run
    (StudyRunLinker); nothing for a grid sweep."""
    url = getattr(mode, "study_url", None)
    if not url:
        return []
    return [StudyRunLinker(url, mode.search.study_name, tracking)]
