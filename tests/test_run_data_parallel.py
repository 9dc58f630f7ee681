"""A sweep whose trials each train on two workers (resources.workers: 2): a Ray Train V2
TorchTrainer inside each Tune trial, DDP over gloo on CPU, on embedded Ray. Its MLflow
metrics equal the one-worker sweep's, and it is the same trial (hash) as the one-worker one."""
from __future__ import annotations

import io
import math
import os

import pytest

from helpers import journal, trials_by_hash
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep

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
