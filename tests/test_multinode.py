"""A sweep submitted to a real two-node Ray cluster on this machine (conftest.ray_two_nodes:
a head and a second node, one CPU each) with a real MLflow server: each trial trains on two
workers (Ray Train, DDP) that `resources.placement: strict_spread` puts on different nodes, each
trial finishes exactly once, and its checkpoints and journal are on the shared storage
(`--storage`), where the trial's placement file names the node of each rank. Before training,
the run checks that every node sees that storage and runs the same code."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import trials_by_hash, wait_for_job
from orchestrator.cli import main
from orchestrator.locations import trials_root
from orchestrator.node_check import node_problems, node_report
from orchestrator.placement import attempts
from orchestrator.trial_folder import CHECKPOINTS, JOURNAL_FILE

# Processes (ranks) per trial, one on each node: strict_spread gives each worker a node of its
# own. Half a CPU a worker leaves room beside the Tune trial that waits for them (trainable.DRIVER_CPU)
# on a one-CPU node; a second trial waits until the first has freed both nodes.
WORKERS = 2
TRIALS = 2
LRS = [1e-3, 2e-3]
STEPS = 200
RESOURCES = {"cpu": 0.5, "gpu": 0, "workers": WORKERS, "placement": "strict_spread"}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two Ray nodes and an MLflow server may each take minutes to be ready under load
def test_a_submitted_sweep_trains_each_trial_on_both_nodes_once(ray_two_nodes, mlflow_server, tmp_path,
                                                                tiny_sweep, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dashboard = ray_two_nodes.dashboard
    tiny_sweep("two-nodes", grid={"lr": LRS}, concurrency=2, resources=RESOURCES,
               base={"steps": STEPS, "eval_interval": STEPS // 2})
    storage = tmp_path / "shared-store"
    assert main(["submit", "two-nodes.yaml", "--address", dashboard, "--tracking-uri", mlflow_server,
                 "--storage", str(storage)]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[0]
    status = wait_for_job(dashboard, job_id, timeout=1200)
    assert main(["logs", job_id, "--address", dashboard]) == 0
    logs = capsys.readouterr().out
    assert status == "SUCCEEDED", logs[-4000:]
    assert f"sweep two-nodes: {TRIALS} finished, 0 diverged, 0 failed" in logs
    assert f"[two-nodes] 2 nodes: each sees the storage {storage} and runs Python" in logs  # node_check passed

    # Every trial finished exactly once: one MLflow run per hash, finished, trained in one attempt.
    runs = trials_by_hash(mlflow_server, "two-nodes")
    assert len(runs) == TRIALS and all(len(r) == 1 for r in runs.values())
    assert {r[0].data.tags["scalelab.outcome"] for r in runs.values()} == {"finished"}
    root = Path(trials_root(str(storage), "two-nodes"))
    placements = {}
    for trial_hash in runs:
        folder = root / trial_hash
        lines = attempts(folder)  # one line per process (rank) of its one attempt
        assert len(lines) == WORKERS and all(line["ok"] for line in lines), lines
        placements[trial_hash] = lines
        # on the shared storage: the journal ends with the one final report, the final checkpoint is kept
        journal = (folder / JOURNAL_FILE).read_text().splitlines()
        assert sum('"final": true' in line for line in journal) == 1
        kept = sorted(p.parent.name for p in (folder / CHECKPOINTS).glob("step_*/state.pt"))
        assert kept == [f"step_{STEPS:08d}"], kept

    for lines in placements.values():  # each trial's ranks ran one on each node
        assert {line["node_id"] for line in lines} == ray_two_nodes.node_ids, lines
        assert sorted(line["rank"] for line in lines) == list(range(WORKERS)), lines


# --- the node check `scalelab run --address` makes before training (orchestrator/node_check.py) ---

def test_each_node_problem_is_one_line_with_its_fix():
    driver = {"python": "3.11.7", "torch": "2.13.0"}
    fine = {"python": "3.11.9", "torch": "2.13.0", "import_error": None, "sees_storage": True}
    reports = {"a": fine,
               "b": {**fine, "torch": None, "import_error": "ModuleNotFoundError: No module named 'torch'"},
               "c": {**fine, "python": "3.10.12"},
               "d": {**fine, "torch": "2.5.0"},
               "e": {**fine, "sees_storage": False},
               "f": "did not answer within 300 s"}
    problems = node_problems(driver, reports, "/shared/store")
    assert len(problems) == 5 and not any(p.startswith("node a") for p in problems)
    text = "\n".join(problems)
    assert "node b cannot import scalelab's trainer (ModuleNotFoundError" in text and "pip install -e ." in text
    assert "node c runs Python 3.10.12, the driver 3.11.7" in text
    assert "node d has torch 2.5.0, the driver 2.13.0" in text
    assert "node e does not see the storage /shared/store" in text and "--storage" in text
    assert "node f: did not answer" in text


def test_a_node_sees_the_storage_when_it_reads_the_drivers_marker(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("token-1")
    assert node_report(str(marker), "token-1")["sees_storage"] is True
    assert node_report(str(marker), "token-2")["sees_storage"] is False
    report = node_report(str(tmp_path / "elsewhere"), "token-1")
    assert report["sees_storage"] is False and report["import_error"] is None and report["torch"]
