"""Hostile sweep files by class — YAML tags on every scalar kind, numbers of every radix and size,
every URI scheme MLflow and Optuna know and nonsense, enormous models, long lists of bad paths,
control characters, strings where numbers belong, counts no machine runs — through `validate`
(and `plan` for the URI class): exit 2, one line of at most 300 characters (besides the file's
path) naming the key, no
traceback, at most 2 s each, at most 500 MB for the whole run. One child process runs them all
(tests/hostile_driver.py), so start-up is paid once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.uri_check import tracking_uri_problem

HERE = Path(__file__).resolve().parent

TAGS = ["!!bool", "!!int", "!!float", "!!timestamp", "!!binary", "!!str", "!!null", "!!set", "!!omap", "!!pairs",
        "!!python/object:os.system", "!!python/name:os.system", "!custom"]
SCALARS = ["maybe", "99", "0x1f", "1e400", "-.inf", ".nan", "2026-13-45", "''", "[1]", "{a: 1}", "~", "yes"]
NUMBERS = ["0x" + "f" * 20_000, "9" * 5000, "1" + "0" * 80, "0o777777777777777777777777777777", "0b" + "1" * 300,
           "1e309", "-1e309", ".inf", ".nan", "1_000_000_000_000_000_000_000_000", "0x", "1e-400", "-0"]
URIS = ["sqlite://", "sqlite:///:memory:", "sqlite:////etc/passwd", "sqlite:////etc", "sqlite:////dev/zero",
        "postgresql://u:pw@127.0.0.1:1/db", "mysql://u:pw@127.0.0.1:1/db", "mssql://u@127.0.0.1:1/db",
        "mysql+nonsense://127.0.0.1/db", "file:///etc", "mlruns", "'   '", "databricks", "databricks-uc", "uc",
        "ftp://127.0.0.1/x", "abc", "http://", "gopher://127.0.0.1", "x" * 5000]
COUNTS = [("concurrency", "'2'"), ("concurrency", "1e9"), ("concurrency", "1" + "0" * 75), ("retries", "1e9"),
          ("retries", "'1'"), ("concurrency", "true"), ("retries", "-1"), ("concurrency", "0")]
CONTROL = ['"a\\0b"', '"a\\nb"', '"\\e[31mred"', '"\\x7f"', '" padded "']


def cases(tmp: Path) -> list[tuple[str, str, str | None]]:
    """(path, command, the key its one line must name; None: the file may also be valid, as a
    tag that fits its value is)."""
    out = []

    def add(text: str, key: str | None, command: str = "validate") -> None:
        path = tmp / f"case{len(out):04d}.yaml"
        path.write_text(text)
        out.append((str(path), command, key))

    for tag in TAGS:
        for scalar in SCALARS:
            add(f"name: x\nbase:\n  steps: {tag} {scalar}\n", None)
            add(f"name: x\ndescription: {tag} {scalar}\n", None)
    for number in NUMBERS:
        for key in ("base:\n  steps", "base:\n  lr", "concurrency", "seeds", "retries"):
            # -0 is 0, and a learning rate has no upper bound in the schema: those may be valid
            add(f"name: x\n{key}: {number}\n", None if number == "-0" or key.endswith("lr") else key.split()[-1])
    for uri in URIS:
        # a database URI whose driver is installed is a valid file until something connects to
        # it: `plan` does (and is refused: nothing listens there), `validate` does not
        connects_later = tracking_uri_problem(uri.strip("'")) is None
        add(f"name: x\ntracking_uri: {uri}\n", None if connects_later else "tracking_uri")
        add(f"name: x\ntracking_uri: {uri}\n", "tracking_uri", "plan")
        add(f"name: x\nsearch:\n  storage: {uri}\n  space: {{lr: {{log_uniform: [1e-4, 1e-2]}}}}\n",
            None if connects_later else "storage")
        add(f"name: x\nbase:\n  from_study: {{storage: {uri}, study: s}}\n", "from_study")
    for width, depth in [(1_048_576, 100_000), (1_048_576, 1_000_000_000), (10 ** 9, 10 ** 9), (8, 10 ** 18)]:
        add(f"name: x\nbase: {{head_dim: 8}}\ngrid:\n  d_model: [{width}]\n  n_layers: [{depth}]\n", "grid")
    paths = ", ".join(f"/nonexistent/part-{i}.txt" for i in range(3000))
    add(f"name: x\nbase:\n  corpus: [{paths}]\n", "corpus")
    add("name: x\nbase:\n  corpus: /dev/zero\n", "corpus")
    add("name: x\nbase:\n  corpus: /\n", "corpus")
    for key, value in COUNTS:
        add(f"name: x\n{key}: {value}\n", key)
    for value in CONTROL:
        add(f"name: x\nexperiment: {value}\n", "experiment")
    add('name: x\ndescription: "bell\\a"\n', "description")
    add('name: x\nsearch: {space: {lr: {log_uniform: [1e-4, 1e-2]}}, study_name: "a\\tb"}\n', "study_name")
    return out


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    todo = cases(tmp)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, str(HERE / "hostile_driver.py")], input=json.dumps([c[:2] for c in todo]),
                          capture_output=True, text=True, cwd=tmp, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return todo, report


def test_enough_cases(outcome):
    todo, _ = outcome
    assert len(todo) >= 400


def test_every_file_is_one_clean_line_fast(outcome):
    """Refused: exit 2 and one line naming the key, or the line and column where YAML itself
    fails (before any key exists); never a traceback; at most 2 s. A file that may be valid
    (a tag that fits its value) may also exit 0."""
    todo, report = outcome
    bad = []
    for (path, command, key), got in zip(todo, report["results"]):
        text = got["stderr"].strip()
        # a file valid until `plan` connects gets the analysis warnings and the progress line
        # of a valid file first; the one-line rule is for the refusal
        lines = [line for line in text.splitlines()
                 if ": warning: " not in line and not line.startswith("checking MLflow at ")]
        short = "\n".join(lines).replace(path, "FILE")  # the limit is on what we say, not on where the user keeps files
        if got["code"] == 0 and key is None:
            why = f"{got['seconds']:.1f} s" if got["seconds"] > 2.0 else ""
        else:
            why = (f"exit {got['code']}" if got["code"] != 2 else "traceback" if "Traceback" in text
                   else f"{len(lines)} lines" if len(lines) != 1 else f"{len(short)} characters" if len(short) > 300
                   else f"{got['seconds']:.1f} s" if got["seconds"] > 2.0
                   else f"names neither {key} nor a line" if key and key not in text and "line " not in text
                   else "")
        if why:
            bad.append(f"{command} {Path(path).read_text()[:120]!r}: {why}: {text[:300]}")
    assert not bad, f"{len(bad)} of {len(todo)}:\n" + "\n".join(bad[:20])


def test_memory_stays_bounded(outcome):
    _, report = outcome
    assert report["max_rss_mb"] <= 500, report["max_rss_mb"]


def test_passwords_in_uris_are_never_printed(outcome):
    _, report = outcome
    leaked = [r["stderr"] for r in report["results"] if ":pw@" in r["stderr"]]
    assert not leaked, leaked[:3]
