"""A sweep whose trials each train on two workers (resources.workers: 2): a Ray Train V2
TorchTrainer inside each Tune trial, DDP over gloo on CPU, on embedded Ray. Its MLflow
metrics equal the one-worker sweep's, and it is the same trial (hash) as the one-worker one."""
from __future__ import annotations

import io
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from helpers import TINY_BASE, journal, trials_by_hash
from orchestrator.locations import trials_root
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep
from trainer.config import TrainConfig
from trainer.loop import train

pytestmark = pytest.mark.timeout(900)

CURVE = {"scheme": "mup", "multipliers": "vector", "steps": 20, "eval_interval": 5}
KEYS = ("train_loss", "val_loss", "grad_norm", "tokens")


@pytest.fixture(scope="module", autouse=True)
def loopback_gloo():
    """gloo on this machine's loopback; set before Ray starts, so its workers inherit it."""
    saved = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    yield
    if saved is None:
        os.environ.pop("GLOO_SOCKET_IFNAME", None)
    else:
        os.environ["GLOO_SOCKET_IFNAME"] = saved


def run(tiny_sweep, uri: str, storage, name: str, resources: dict):
    spec = load_sweep(str(tiny_sweep(name, base=CURVE, resources=resources)))
    out = io.StringIO()
    summary = run_sweep(spec, RunOptions(tracking_uri=uri, storage=str(storage), out=out))
    assert summary.count("finished") == 1, out.getvalue()
    return spec.trials()[0], out.getvalue()


def history(uri: str, experiment: str, trial_hash: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    (run_,) = trials_by_hash(uri, experiment)[trial_hash]
    client = MlflowClient(tracking_uri=uri)
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_.info.run_id, k)] for k in KEYS}


def test_a_two_worker_sweep_records_the_one_worker_curve(ray_local, tiny_sweep, tracking_uri, tmp_path):
    one, _ = run(tiny_sweep, tracking_uri, tmp_path / "store", "one-worker", {"cpu": 1, "gpu": 0})
    two, output = run(tiny_sweep, tracking_uri, tmp_path / "store", "two-workers",
                      {"cpu": 0.5, "gpu": 0, "workers": 2})
    assert two.hash == one.hash and two.resources["workers"] == 2  # the same trial, moved to two workers
    got, want = history(tracking_uri, "two-workers", two.hash), history(tracking_uri, "one-worker", one.hash)
    for key in KEYS:
        assert [s for s, _ in got[key]] == [s for s, _ in want[key]] == [5, 10, 15, 20], key
        for (_, a), (_, b) in zip(got[key], want[key]):
            assert math.isclose(a, b, rel_tol=1e-5), (key, got[key], want[key])
    # rank 0 alone journaled: one entry per report, as the one-worker trial did
    entries = journal(tmp_path / "store", "two-workers", two.hash)
    assert [e["metrics"]["step"] for e in entries] == [5, 10, 15, 20]
    assert entries[-1]["metrics"]["final"] is True and entries[-1]["multipliers"]


def train_workers() -> list[int]:
    """The pids of this test's Ray Train workers: children of its own raylet (other Ray
    instances on the machine have their own) whose title Ray set to the worker actor's."""
    import ray
    from ray._private import ray_constants

    raylet = ray._private.worker._global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == raylet and title.startswith("ray::RayTrainWorker"):
            found.append(int(entry.name))
    return found


def test_a_killed_worker_is_retried_from_its_checkpoint_without_loss_or_duplicates(ray_local, tiny_sweep,
                                                                                   tracking_uri, tmp_path):
    """kill -9 of one of the two workers mid-trial: Tune retries the trial from its latest
    checkpoint; MLflow ends with each report once, equal to the uninterrupted run's."""
    long_curve = {**CURVE, "steps": 120, "eval_interval": 10, "warmup_steps": 5}
    path = tiny_sweep("killed", base=long_curve, resources={"cpu": 0.5, "gpu": 0, "workers": 2}, retries=2)
    spec = load_sweep(str(path))
    trial = spec.trials()[0]
    reports = Path(trials_root(str(tmp_path / "store"), "killed")) / trial.hash / "reports.jsonl"
    killed: list[int] = []

    def kill_one_worker_mid_trial():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            lines = reports.read_text().splitlines() if reports.is_file() else []
            if len(lines) >= 3 and '"final": true' not in lines[-1]:
                workers = train_workers()
                if workers:
                    os.kill(workers[-1], signal.SIGKILL)
                    killed.append(len(lines))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_trial, daemon=True)
    killer.start()
    out = io.StringIO()
    summary = run_sweep(spec, RunOptions(tracking_uri=tracking_uri, storage=str(tmp_path / "store"), out=out))
    killer.join(timeout=1)
    assert killed, "no worker was killed mid-trial: " + out.getvalue()
    assert summary.count("finished") == 1, out.getvalue()
    resumed = re.search(r"resumed .* from step (\d+)", out.getvalue())  # from its checkpoint, not from scratch
    assert resumed and 10 <= int(resumed.group(1)) < 120, out.getvalue()
    one = train(TrainConfig(**{**TINY_BASE, **long_curve}))  # the uninterrupted curve, on one process
    want = {h["step"]: h for h in one.history}
    got = history(tracking_uri, "killed", trial.hash)
    for key in ("train_loss", "val_loss"):
        assert [s for s, _ in got[key]] == list(range(10, 121, 10)), key  # each report once: none lost, none twice
        for step, value in got[key]:
            assert math.isclose(value, want[step][key], rel_tol=1e-5), (key, step)
    entries = journal(tmp_path / "store", "killed", trial.hash)
    assert [e["metrics"]["step"] for e in entries] == list(range(10, 121, 10))
