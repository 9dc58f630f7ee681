"""`scalelab submit | status | logs` against a real Ray head and a real MLflow server, both
started here on 127.0.0.1 (fixtures in conftest.py), plus the refusals that need no cluster."""
from __future__ import annotations

import subprocess

import pytest

from helpers import sweep_runs, wait_for_job
from orchestrator import jobs
from orchestrator.cli import main


def test_submit_refuses_a_local_tracking_uri(tmp_path, tiny_sweep, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny_sweep("local-only")
    code = main(["submit", "local-only.yaml", "--address", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is a local file" in err and "mlflow server" in err and "Traceback" not in err
    code = main(["submit", "local-only.yaml", "--address", "http://127.0.0.1:9",
                 "--tracking-uri", "sqlite:///x.db"])
    assert code == 2 and "--tracking-uri http://HOST:5000" in capsys.readouterr().err


def test_unreachable_cluster_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["status"]) == 2
    assert "pass --address http://HEAD:8265" in capsys.readouterr().err
    assert main(["status", "--address", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at http://127.0.0.1:9" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.timeout(1800)  # its Ray head and MLflow server may take up to 600 s and 300 s to be ready under load
def test_submit_runs_the_sweep_on_a_real_cluster(ray_head, mlflow_server, tmp_path, tiny_sweep,
                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALELAB_CODE_VERSION", "test-cluster-version")
    tiny_sweep("on-cluster", grid={"lr": [1e-3, 3e-3]}, concurrency=2)
    (tmp_path / "mlflow.db").write_text("")  # a local file that must not be uploaded or used

    assert main(["submit", "on-cluster.yaml", "--address", ray_head, "--tracking-uri", mlflow_server,
                 "--storage", str(tmp_path / "cluster-store")]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[0]
    assert job_id.startswith("scalelab-on-cluster-")

    status = wait_for_job(ray_head, job_id)
    assert main(["logs", job_id, "--address", ray_head]) == 0
    logs = capsys.readouterr().out
    assert status == "SUCCEEDED", logs[-4000:]
    assert "sweep on-cluster: 2 finished, 0 diverged, 0 failed" in logs

    assert main(["logs", job_id, "--address", ray_head, "--follow"]) == 0  # ends with the job
    assert "sweep on-cluster:" in capsys.readouterr().out
    assert main(["status", job_id, "--address", ray_head]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert main(["status", "--address", ray_head]) == 0
    assert job_id in capsys.readouterr().out

    client, parents, trials = sweep_runs(mlflow_server, "on-cluster")
    assert len(trials) == 2 and len(parents) == 1
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["scalelab.outcome"] == "finished"
        assert run.data.tags["scalelab.code_version"] == "test-cluster-version"
        assert run.data.tags["scalelab.ray_job_id"] == job_id  # the run names its Ray Job
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40  # the submitting checkout's commit
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [10, 20]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names == {"config.yaml", "multipliers.csv"}
    assert {"sweep.yaml", "results_table.json"} <= {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert jobs.job_status(ray_head, job_id + "-check") == "SUCCEEDED"  # submit checked the cluster's Python first
    # checkpoints went to the storage we named, keyed by experiment and trial hash
    assert len(list((tmp_path / "cluster-store" / "trials" / "on-cluster").glob("*/reports.jsonl"))) == 2


@pytest.mark.slow
@pytest.mark.timeout(1200)  # its Ray head may take up to 600 s to be ready under load
def test_the_import_check_fails_on_a_python_without_the_project(ray_head, tmp_path):
    """The check job of `scalelab submit`, run by the cluster: the system Python (no Ray, MLflow or
    torch installed) cannot import the project and is named with the fix; the cluster's own passes."""
    import shutil

    system_python = shutil.which("python3", path="/usr/bin")
    bare = system_python and subprocess.run([system_python, "-c", "import mlflow"], capture_output=True).returncode
    if not bare:
        pytest.skip("needs a system Python without the project's dependencies")
    env = jobs.runtime_env(tmp_path)  # the project's packages travel as py_modules
    jobs_client = jobs.client(ray_head)
    with pytest.raises(jobs.UserError) as err:
        jobs.check_cluster_python(jobs_client, "bare", env, ray_head, python=system_python)
    message = str(err.value)
    assert message.startswith("the cluster's Python cannot import the project (ModuleNotFoundError: No module named")
    assert "install the project on every node" in message and "Traceback" not in message
    jobs.check_cluster_python(jobs_client, "installed", env, ray_head)  # the cluster's own Python: passes
