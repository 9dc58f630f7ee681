"""A sweep submitted to a real two-node Ray cluster on this machine (conftest.ray_two_nodes:
a head and a second node, one CPU each) with a real MLflow server: its trials must use both
nodes, each trial finishes exactly once, and its checkpoints and journal are on the shared
storage (`--storage`), where the trial's placement file names the node that trained it. Before
training, the run checks that every node sees that storage and runs the same code."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import trials_by_hash, wait_for_job
from orchestrator.cli import main
from orchestrator.locations import trials_root
from orchestrator.node_check import node_problems, node_report
from orchestrator.placement import attempts
from orchestrator.trial_folder import CHECKPOINTS, JOURNAL_FILE

# Processes per trial. Each node has one CPU and each process asks for one, so two trials at a
# time (WORKERS = 1) cannot share a node, and a data-parallel trial of two workers must span both.
WORKERS = 1
TRIALS = 4 if WORKERS == 1 else 2
LRS = [1e-3, 2e-3, 3e-3, 4e-3][:TRIALS]
# Tens of seconds a trial: Tune re-uses a finished trial's worker for the next trial, so trials
# as short as the second node's first worker takes to start (its runtime env, torch) could all
# run on the head, one after another.
STEPS = 600
RESOURCES = {"cpu": 1, "gpu": 0, **({"workers": WORKERS} if WORKERS > 1 else {})}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two Ray nodes and an MLflow server may each take minutes to be ready under load
def test_a_submitted_sweep_runs_on_both_nodes_once_each(ray_two_nodes, mlflow_server, tmp_path, tiny_sweep,
                                                        monkeypatch, capsys):
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

    if WORKERS > 1:  # each trial's ranks ran on both nodes
        for lines in placements.values():
            assert {line["node_id"] for line in lines} == ray_two_nodes.node_ids, lines
            assert sorted(line["rank"] for line in lines) == list(range(WORKERS)), lines
        return
    # Both nodes trained, and trials that trained at the same time did so on different nodes. (Whether
    # two overlap at all depends on timing: the second node's first worker starts later, and under
    # load a tiny trial on the head may end before it starts.)
    lone = [lines[0] for lines in placements.values()]
    used = {p["node_id"] for p in lone}
    assert used == ray_two_nodes.node_ids, (used, ray_two_nodes.node_ids)
    ordered = sorted(lone, key=lambda p: p["started"])
    overlapping = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]
                   if b["started"] < a["ended"]]
    assert all(a["node_id"] != b["node_id"] for a, b in overlapping), overlapping


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
