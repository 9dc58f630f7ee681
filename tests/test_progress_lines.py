"""What a researcher sees while a sweep runs: a long trial's own throttled progress lines and
the sweep's ETA from planned compute."""

import io
from types import SimpleNamespace

import pytest

from orchestrator.progress import PROGRESS_ENV, trial_progress_s
from orchestrator.trial import REPORT_KEY
from helpers import TINY_TRAIN
from trainer.config import TrainConfig, UserError
from trainer.loop import Throttle, Trainer, run, train


class FakeClock:
    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_throttle_waits_a_full_interval_then_at_most_once_per_interval():
    clock = FakeClock()
    throttle = Throttle(30, clock)
    seen = []
    for t in range(0, 100, 5):
        clock.now = t
        seen.append((t, throttle.due()))
    assert [t for t, due in seen if due] == [30, 60, 90]


def test_throttle_zero_never_prints():
    clock = FakeClock(step=1000)
    throttle = Throttle(0, clock)
    assert not any(throttle.due() for _ in range(5))


def test_a_long_run_prints_labelled_lines(capsys):
    cfg = TrainConfig(**TINY_TRAIN)
    trainer = Trainer(cfg)
    trainer.run.label = "[d=32] "
    run(trainer, [None], [None], progress_s=25, clock=FakeClock(step=10))  # 10 s per step
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(line.startswith("[d=32] step ") for line in lines)
    assert len(lines) == cfg.steps // 3  # one line every third step (30 s >= 25 s)
    assert f"/{cfg.steps} | train " in lines[0] and " tok/s" in lines[0]
    assert "| val - |" in lines[0]  # no eval yet at step 3
    assert "| val - |" not in lines[-1]  # known after the first eval point


def test_a_run_shorter_than_the_interval_prints_nothing(capsys):
    train(TrainConfig(**TINY_TRAIN), progress_s=3600, label="[short] ")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text, seconds", [(None, 30.0), ("", 30.0), ("5", 5.0), ("0", 0.0), ("2.5", 2.5)])
def test_progress_interval_from_the_environment(text, seconds):
    assert trial_progress_s({} if text is None else {PROGRESS_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", "nan"])
def test_a_bad_progress_interval_says_the_fix(text):
    with pytest.raises(UserError, match=PROGRESS_ENV):
        trial_progress_s({PROGRESS_ENV: text})


# --- the sweep's ETA -------------------------------------------------------------------------

class Sweep:
    """A ProgressPrinter fed synthetic Tune events at set times; every trial has 100 steps."""

    def __init__(self, monkeypatch, hashes: str, to_run: int, work: dict[str, float] | None = None):
        from orchestrator import progress

        self.now = 0.0
        monkeypatch.setattr(progress.time, "time", lambda: self.now)
        self.trials = {h: SimpleNamespace(hash=h, label=f"trial {h}", config=SimpleNamespace(steps=100))
                       for h in hashes}
        self.out = io.StringIO()
        self.printer = progress.ProgressPrinter("s", to_run, lambda config: self.trials[config["h"]],
                                                "final_val_loss", "min", out=self.out, work=work)

    def tune_trial(self, h: str):
        return SimpleNamespace(trial_id=f"t-{h}", config={"h": h})

    def start(self, h: str, at: float) -> None:
        self.now = at
        self.printer.on_trial_start(0, [], self.tune_trial(h))

    def report(self, h: str, step: int, at: float, final: bool = False, replay: bool = False) -> None:
        self.now = at
        metrics = {"step": step, **({"final": True, "status": "finished", "final_val_loss": 2.0} if final else {})}
        self.printer.on_trial_result(0, [], self.tune_trial(h), {REPORT_KEY: {"metrics": metrics, "replay": replay}})

    def eta(self) -> str:
        return self.out.getvalue().splitlines()[-1].split("| ETA ")[1].split(" |")[0]


def test_the_eta_is_unknown_until_a_trial_ended(monkeypatch):
    sweep = Sweep(monkeypatch, "ab", 2, work={"a": 10.0, "b": 10.0})
    sweep.start("a", at=0)
    sweep.start("b", at=0)
    sweep.report("a", 50, at=5)
    sweep.report("b", 50, at=5)
    sweep.start("b", at=5)  # a line (a retry's) while both run
    assert sweep.eta() == "unknown"
    sweep.report("a", 100, at=10, final=True)
    assert sweep.eta() != "unknown"


def test_trials_running_beside_the_first_to_end_count_with_the_steps_they_reported(monkeypatch):
    """Four equal trials run at once, four wait. When the first ends at 10 s the other three are
    at 90 %: 3.7 trials' worth done in 10 s, 4.3 left, so about 12 s more (the rest run four at a
    time). Extrapolating from the ended trial alone would say 70 s."""
    sweep = Sweep(monkeypatch, "abcdefgh", 8, work={h: 10.0 for h in "abcdefgh"})
    for h in "abcd":
        sweep.start(h, at=0)
    for h in "bcd":
        sweep.report(h, 90, at=9)
    sweep.report("a", 100, at=10, final=True)
    assert sweep.eta() == "12s"


def test_the_eta_weights_the_trials_left_by_their_planned_compute(monkeypatch):
    """A small trial (estimate 10 s) took 10 s; the wide one left is planned at 90 s."""
    sweep = Sweep(monkeypatch, "ab", 2, work={"a": 10.0, "b": 90.0})
    sweep.start("a", at=0)
    sweep.report("a", 100, at=10, final=True)
    assert sweep.eta() == "1m30s"


def test_work_done_before_a_resume_is_not_taken_for_speed(monkeypatch):
    """Trial a resumed at step 50 and took 10 s for its second half: 2 s per second of estimate,
    so b (estimate 10 s) needs 20 s, not the 10 s the whole of a would suggest."""
    sweep = Sweep(monkeypatch, "ab", 2, work={"a": 10.0, "b": 10.0})
    sweep.start("a", at=0)
    sweep.report("a", 50, at=0, replay=True)
    sweep.report("a", 100, at=10, final=True)
    assert sweep.eta() == "20s"


def test_a_search_counts_one_unit_per_trial_including_those_not_sampled_yet(monkeypatch):
    sweep = Sweep(monkeypatch, "ab", 4)
    sweep.start("a", at=0)
    sweep.start("b", at=0)
    sweep.report("b", 50, at=10)
    sweep.report("a", 100, at=20, final=True)
    assert sweep.eta() == "33s"  # 1.5 trials in 20 s; 2.5 left (half of b, two not sampled)


# --- start-up noise --------------------------------------------------------------------------

def test_start_up_chatter_is_below_the_level_its_loggers_speak_from():
    """MLflow's "Creating initial MLflow database tables..." (INFO) and Ray's token notice
    (WARNING) stay off a run's terminal; real warnings of MLflow still pass."""
    import logging

    from orchestrator import ray_local

    ray_local.quiet_startup()
    assert not logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.INFO)
    assert logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert not token.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("setting, dedup", [(None, False), ("1", True)])
def test_a_trials_progress_lines_are_not_folded_by_ray(monkeypatch, setting, dedup):
    from ray._private import ray_logging

    from orchestrator import ray_local

    monkeypatch.setattr(ray_logging, "RAY_DEDUP_LOGS", ray_logging.RAY_DEDUP_LOGS)
    if setting is None:
        monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    else:
        monkeypatch.setenv("RAY_DEDUP_LOGS", setting)
    ray_local.keep_repeated_lines()
    assert ray_logging.RAY_DEDUP_LOGS is dedup
