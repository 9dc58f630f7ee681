"""What a researcher sees while a sweep runs: a long trial's own throttled progress lines and
the sweep's ETA from planned compute."""

import pytest

from orchestrator.progress import PROGRESS_ENV, trial_progress_s
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
