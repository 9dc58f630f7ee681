"""orchestrator/study_link.py without Ray running: the Optuna trial whose params are a Tune
trial's sampled values gets the MLflow child run's id, and the run gets the study and trial
number; a trial that matches nothing is left alone and a failure to link is a note, not an
error. (The real search sweep: test_browse_ui.)"""
from __future__ import annotations

import pickle
import threading
import time
from types import SimpleNamespace

import optuna

from helpers import study_storage
from orchestrator import study_link
from orchestrator.study_link import StudyRunLinker
from orchestrator.trial import REPORT_KEY


class FakeTracking:
    """What the linker uses of the MLflow tracking callback: the records of each Tune trial and
    a hook that runs once the queued writes (the child run's creation) are done."""

    def __init__(self, records: dict):
        self.records = records
        self.tags: dict[str, dict] = {}   # run id -> tags written through tag_run

    def after_writes(self, fn):
        fn()

    def tag_run(self, rec, tags: dict):
        self.tags[rec.child.run_id] = tags


def record(run_id: str | None):
    return SimpleNamespace(child=SimpleNamespace(run_id=run_id) if run_id else None)


def running_study(tmp_path, lrs):
    """A study with one RUNNING trial per learning rate, as the searcher leaves them on start."""
    storage = study_storage(tmp_path)
    study = optuna.create_study(study_name="link", storage=storage)
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
        study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)})
    return storage, study


def test_the_running_trial_with_the_sampled_values_gets_the_child_run_id(tmp_path):
    storage, _ = running_study(tmp_path, [0.01, 0.002])
    tracking = FakeTracking({"tune-1": [record("run-b")], "tune-2": [record(None)]})
    linker = StudyRunLinker(storage, "link", tracking)
    linker.on_trial_start(0, [], SimpleNamespace(trial_id="tune-1", config={"lr": 0.002 * (1 + 1e-15)}))
    linker.on_trial_start(0, [], SimpleNamespace(trial_id="tune-2", config={"lr": 0.01}))  # no child run yet
    linker.on_trial_start(0, [], SimpleNamespace(trial_id="tune-3", config={"lr": 0.01}))  # no record
    attrs = {t.params["lr"]: t.user_attrs for t in optuna.load_study(study_name="link", storage=storage).trials}
    assert attrs == {0.002: {"mlflow_run_id": "run-b"}, 0.01: {}}
    assert tracking.tags == {"run-b": {"scalelab.optuna_study": "link", "scalelab.optuna_trial": "1"}}


def test_a_sample_that_matches_no_trial_is_left_alone_and_a_broken_store_is_a_note(tmp_path, capsys):
    storage, _ = running_study(tmp_path, [0.01])
    linker = StudyRunLinker(storage, "link", FakeTracking({"t": [record("run-a")]}))
    linker.on_trial_start(0, [], SimpleNamespace(trial_id="t", config={"lr": 0.5}))
    assert [t.user_attrs for t in optuna.load_study(study_name="link", storage=storage).trials] == [{}]

    broken = StudyRunLinker(storage, "no-such-study", FakeTracking({"t": [record("run-a")]}))
    broken.on_trial_start(0, [], SimpleNamespace(trial_id="t", config={"lr": 0.01}))
    assert "could not link Optuna trial to MLflow run run-a" in capsys.readouterr().out


class SlowOutbox(FakeTracking):
    """The outbox's thread, slow (an MLflow server on a busy database): queued writes run
    `delay` seconds later, in order, on another thread."""

    def __init__(self, records: dict, delay: float):
        super().__init__(records)
        self.delay, self.threads = delay, []

    def after_writes(self, fn):
        thread = threading.Timer(self.delay, fn)
        thread.start()
        self.threads.append(thread)


def final(final: bool) -> dict:
    return {REPORT_KEY: {"metrics": {"final": final, "step": 10}}}


def test_the_final_report_waits_for_the_link_so_optuna_never_closes_an_unlinked_trial(tmp_path, monkeypatch):
    storage, _ = running_study(tmp_path, [0.002])
    tracking = SlowOutbox({"tune-1": [record("run-b")]}, delay=0.5)
    linker = StudyRunLinker(storage, "link", tracking)
    trial = SimpleNamespace(trial_id="tune-1", config={"lr": 0.002})
    linker.on_trial_start(0, [], trial)
    started = time.monotonic()
    linker.on_trial_result(0, [], trial, final(False))  # an early report: Tune's loop goes on at once
    assert time.monotonic() - started < 0.4
    linker.on_trial_result(0, [], trial, final(True))  # Tune tells the searcher next: linked by now
    attrs = [t.user_attrs for t in optuna.load_study(study_name="link", storage=storage).trials]
    assert attrs == [{"mlflow_run_id": "run-b"}]


def test_the_wait_for_a_link_is_bounded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study_link, "LINK_WAIT_S", 0.2)
    storage, _ = running_study(tmp_path, [0.002])
    tracking = SlowOutbox({"tune-1": [record("run-b")]}, delay=2.0)  # MLflow unreachable meanwhile
    linker = StudyRunLinker(storage, "link", tracking)
    trial = SimpleNamespace(trial_id="tune-1", config={"lr": 0.002})
    linker.on_trial_start(0, [], trial)
    started = time.monotonic()
    linker.on_trial_result(0, [], trial, final(True))
    assert time.monotonic() - started < 1.5
    assert "not linked to its MLflow run" in capsys.readouterr().out
    for thread in tracking.threads:
        thread.cancel()
    linker.tracking = FakeTracking({})  # (the test's slow outbox holds threads; the real callback pickles)
    assert pickle.loads(pickle.dumps(linker))._linked == {}  # Tune copies callbacks: no events to carry
