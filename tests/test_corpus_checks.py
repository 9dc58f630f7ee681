"""A corpus entry that cannot be read gets the right reason, in one line, before a run and when
the trainer reads it (trainer/config.py corpus_problem, the one rule)."""
import pytest

from orchestrator.spec import load_sweep
from trainer.config import TrainConfig, corpus_problem
from trainer.data import DataError, load_tokens


@pytest.mark.parametrize("name, reason", [
    ("/dev/zero", "is a device, pipe or socket"), ("/", "is a system folder"), ("/proc", "is a system folder"),
    ("/proc/self", "is a system folder"), ("/nonexistent/corpus.txt", "does not exist"),
])
def test_the_reason_fits_the_path(name, reason):
    assert reason in corpus_problem(name)


def test_usable_entries(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert corpus_problem("kjv") is None
    assert corpus_problem(str(tmp_path / "a.txt")) is None and corpus_problem(str(tmp_path)) is None


def test_the_trainer_gives_the_same_reason():
    with pytest.raises(DataError, match="is a device, pipe or socket"):
        load_tokens(TrainConfig(corpus="/dev/zero"))


def test_thousands_of_missing_paths_are_one_line(tmp_path):
    paths = [f"/nonexistent/part-{i}.txt" for i in range(3000)]
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: many\nbase:\n  corpus: [" + ", ".join(paths) + "]\n")
    lines = load_sweep(str(sweep)).missing_corpora()
    assert len(lines) == 1 and "and 2999 more" in lines[0] and len(lines[0]) < 400
