"""Optuna trial -> MLflow run: the user attribute `mlflow_run_id` on each trial of a search
sweep's study, so optuna-dashboard shows which MLflow run a trial is (orchestrator/ui_cli.py
adds this callback for search sweeps)."""
from __future__ import annotations

from ray import tune


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b



class StudyRunLinker(tune.Callback):
    """Driver-side, after the MLflow tracking callback (it creates the child run on trial start):
    finds the study's RUNNING trial whose params are this Tune trial's sampled values and sets
    its user attribute `mlflow_run_id` (a finished Optuna trial can no longer be changed, so
    this happens on start). Matching by params, not by the searcher's objects: Tune may work on
    copies of them."""

    def __init__(self, study_url: str, study_name: str, tracking):
        self.study_url, self.study_name, self.tracking = study_url, study_name, tracking
        self._study = None

    def on_trial_start(self, iteration, trials, trial, **info):
        recs = self.tracking.records.get(trial.trial_id)
        if not recs:
            return
        rec = recs[0]  # a search sample is never a fused pack
        # the child run is created by the tracking callback's outbox: link once it exists
        config = dict(trial.config)
        self.tracking.after_writes(lambda: self._link(config, rec))

    def _link(self, config: dict, rec) -> None:
        if rec.child is None:
            return
        try:
            import optuna

            from .search import open_storage

            if self._study is None:
                self._study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.study_url))
            running = self._study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            for ot in running:
                if ot.params and all(_same(config.get(k), v) for k, v in ot.params.items()):
                    if ot.user_attrs.get("mlflow_run_id") != rec.child.run_id:
                        self._study._storage.set_trial_user_attr(ot._trial_id, "mlflow_run_id", rec.child.run_id)
                    return
        except Exception as err:  # noqa: BLE001 - a missing link must not stop the sweep
            print(f"note: could not link Optuna trial to MLflow run {rec.child.run_id}: {err}")
