"""GPUs as Ray schedules them, on a CPU machine: a Ray node that declares two GPUs
(conftest.ray_gpu_node) runs sweeps with a fractional `gpu:` and with `gpu: auto`. The trials
train on CPU; Ray still reserves their GPU shares and gives each its ids. What each trial was
given is in its placement file (orchestrator/placement.py): the shares match `scalelab plan`,
the trials ran at once exactly as many as those shares allow (overlapping training intervals
counted), and each trial saw the GPU Ray assigned (CUDA_VISIBLE_DEVICES), a trial given none no GPU."""
from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import GPUS_DECLARED
from helpers import trials_by_hash, write_sweep
from orchestrator.cli import main
from orchestrator.locations import trials_root
from orchestrator.placement import attempts, recorded
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep
from orchestrator.trial_folder import PLACEMENT_FILE

pytestmark = pytest.mark.timeout(900)

# Long enough (seconds a trial) that trials started together overlap in time.
BASE = {"steps": 120, "eval_interval": 40, "device": "cpu"}
# gpu: auto sizes a trial's share from its estimated memory against gpu_memory_gb: the tiny
# model at d_model 32 needs ~1.7 MB, 0.4 of this budget (share 0.5); at 64, ~3.5 MB, 0.8 (share 1).
TINY_GPU_MEMORY_GB = 0.004


def planned(path: Path, uri: str) -> dict[str, dict]:
    """`scalelab plan --json`'s trial rows by hash."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", str(path), "--json", "--no-measure", "--tracking-uri", uri]) == 0
    return {row["hash"]: row for row in json.loads(out.getvalue())["trials"]}


def run_and_place(path: Path, uri: str, storage: Path) -> dict[str, dict]:
    """Run the sweep; each trial's one placement line, by hash."""
    spec = load_sweep(str(path))
    out = io.StringIO()
    summary = run_sweep(spec, RunOptions(tracking_uri=uri, storage=str(storage), out=out))
    assert summary.count("finished") == len(spec.trials()), out.getvalue()[-3000:]
    runs = trials_by_hash(uri, spec.experiment)
    assert all(len(r) == 1 for r in runs.values())
    root = Path(trials_root(str(storage), spec.experiment))
    placed = {}
    for trial in spec.trials():
        lines = attempts(root / trial.hash)
        assert len(lines) == 1 and lines[0]["ok"], lines
        placed[trial.hash] = lines[0]
    return placed


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The largest number of [start, end) intervals that hold one instant."""
    return max(sum(1 for s, e in intervals if s <= t < e) for t, _ in intervals)


def check_gpu_assignment(placed: dict[str, dict], plan: dict[str, dict]) -> dict[str, list]:
    """Each trial got the GPU share the plan gave it, one GPU id, and saw exactly that id;
    at no instant does a GPU hold more than its whole. Returns the trials by GPU id."""
    by_gpu: dict[str, list] = defaultdict(list)
    for trial_hash, where in placed.items():
        assert where["assigned"]["GPU"] == pytest.approx(plan[trial_hash]["gpu"]), (where, plan[trial_hash])
        assert len(where["gpu_ids"]) == 1, where
        assert where["cuda_visible_devices"] == where["gpu_ids"][0], where
        by_gpu[where["gpu_ids"][0]].append(where)
    assert set(by_gpu) <= {str(i) for i in range(GPUS_DECLARED)}
    for on_one in by_gpu.values():
        for where in on_one:
            t = where["started"]
            load = sum(w["assigned"]["GPU"] for w in on_one if w["started"] <= t < w["ended"])
            assert load <= 1 + 1e-9, on_one
    return by_gpu


def test_fractional_gpus_pack_trials_as_planned(ray_gpu_node, tracking_uri, tmp_path):
    path = write_sweep(tmp_path, "gpu-half", grid={"lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3]},
                       base=BASE, resources={"cpu": 1, "gpu": 0.5})
    plan = planned(path, tracking_uri)
    assert {row["gpu"] for row in plan.values()} == {0.5}
    placed = run_and_place(path, tracking_uri, tmp_path / "store")
    by_gpu = check_gpu_assignment(placed, plan)
    # two GPUs at 0.5 a trial: four at once (the node's 8 CPUs would allow 8), two on each GPU
    assert most_at_once([(w["started"], w["ended"]) for w in placed.values()]) == GPUS_DECLARED * 2
    assert set(by_gpu) == {"0", "1"}
    assert all(most_at_once([(w["started"], w["ended"]) for w in on_one]) == 2 for on_one in by_gpu.values())


def test_gpu_auto_shares_follow_the_plan(ray_gpu_node, tracking_uri, tmp_path):
    path = write_sweep(tmp_path, "gpu-auto", grid={"d_model": [32, 64], "lr": [1e-3, 2e-3, 3e-3]},
                       base=BASE, resources={"cpu": 1, "gpu": "auto", "gpu_memory_gb": TINY_GPU_MEMORY_GB})
    doc = yaml.safe_load(path.read_text())
    del doc["base"]["d_model"]  # the grid sets it
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = planned(path, tracking_uri)
    shares = {row["overrides"]["d_model"]: row["gpu"] for row in plan.values()}
    assert shares == {32: 0.5, 64: 1.0}
    placed = run_and_place(path, tracking_uri, tmp_path / "store")
    check_gpu_assignment(placed, plan)
    halves = [w for h, w in placed.items() if plan[h]["gpu"] == 0.5]
    # the three half-GPU trials: two of them shared a GPU at some instant
    assert any(most_at_once([(w["started"], w["ended"]) for w in halves if w["gpu_ids"] == [gpu]]) == 2
               for gpu in ("0", "1"))


def test_a_trial_given_no_gpu_sees_none(ray_gpu_node, tracking_uri, tmp_path):
    """Ray leaves CUDA_VISIBLE_DEVICES alone for a worker without GPUs: the trainable hides them,
    so `device: auto` cannot pick a GPU that other trials reserved."""
    path = write_sweep(tmp_path, "gpu-none", grid={"lr": [1e-3, 2e-3]}, base={**BASE, "steps": 20},
                       resources={"cpu": 1, "gpu": 0})
    placed = run_and_place(path, tracking_uri, tmp_path / "store")
    for where in placed.values():
        assert where["gpu_ids"] == [] and where["cuda_visible_devices"] == "", where
        assert "GPU" not in where["assigned"]


def test_an_attempt_that_raises_is_recorded_and_a_cut_line_is_skipped(tmp_path):
    with pytest.raises(RuntimeError):
        with recorded([tmp_path], rank=1):
            raise RuntimeError("crash")
    with open(tmp_path / PLACEMENT_FILE, "a") as fh:
        fh.write('{"node_id": "cut sh')  # a kill mid-write
    [line] = attempts(tmp_path)
    assert line["ok"] is False and line["rank"] == 1 and line["ended"] >= line["started"]
    assert line["pid"] > 0 and "cuda_visible_devices" in line
