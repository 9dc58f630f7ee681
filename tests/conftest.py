"""Shared fixtures and the `slow`/`fast` split. Tiny sweep files, MLflow URIs in tmp dirs, one
embedded Ray per module, a real `ray start --head` and a real `mlflow server` (each in its own
process group, ended by group id — never `ray stop`, which would kill every Ray on the machine).
The helpers behind them live in tests/helpers.py, which test modules import too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

# Test modules `from helpers import ...`: make that work under any --import-mode, not only the
# default one that happens to put this folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import (MlflowServer, alive_nodes, free_port, start_ray_node, stop_group, wait_http,  # noqa: E402
                     wait_ready, write_sweep)

# --- slow and fast ------------------------------------------------------------------------------
# A test is slow when it starts a real system: these fixtures start one (embedded Ray, a Ray
# head, an MLflow server, Chromium), so a test that uses one is marked slow here; a test that
# starts one itself (a `scalelab` subprocess, say) or trains for many seconds carries
# @pytest.mark.slow. Every other test is marked fast: `pytest -m fast` is the quick run, and
# stays complete as tests are added.
REAL_SYSTEM_FIXTURES = frozenset({"ray_local", "ray_head", "ray_two_nodes", "ray_gpu_node", "mlflow_server",
                                  "restartable_mlflow_server", "postgres", "postgres_mlflow_server", "browsed_sweep",
                                  "chromium", "browser"})


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; benchmarks/gpu_check.py runs them)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_SYSTEM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


# --- sweep files and stores ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def sweep_writer():
    """`write_sweep`, as a fixture (helpers.write_sweep is the same function)."""
    return write_sweep


@pytest.fixture(scope="session")
def process_tools():
    """free_port, wait_http and stop_group, as a fixture (the same functions as in helpers)."""
    return SimpleNamespace(free_port=free_port, wait_http=wait_http, stop_group=stop_group)


@pytest.fixture
def tiny_sweep(tmp_path):
    return lambda name, **sections: write_sweep(tmp_path, name, **sections)


@pytest.fixture(scope="session")
def empty_tracking_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables made, once: making them takes seconds, a copy
    a tenth of a second. (Its Default experiment points here; scalelab never uses it.)"""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    MlflowClient(tracking_uri="sqlite:///" + str(path)).search_experiments()
    return path


def fresh_tracking_uri(directory: Path, empty_db: Path) -> str:
    db = directory / "mlflow.db"
    shutil.copyfile(empty_db, db)
    return "sqlite:///" + str(db)


@pytest.fixture
def tracking_uri(tmp_path, empty_tracking_db) -> str:
    """A fresh SQLite MLflow of this test's own."""
    return fresh_tracking_uri(tmp_path, empty_tracking_db)


@pytest.fixture(scope="module")
def shared_tracking_uri(tmp_path_factory, empty_tracking_db) -> str:
    """One SQLite MLflow per module; tests use their own experiment names in it."""
    return fresh_tracking_uri(tmp_path_factory.mktemp("mlflow"), empty_tracking_db)


# --- real systems -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    """One embedded Ray per test module (ray.init costs seconds); the runner re-uses it."""
    import ray

    from orchestrator.ray_local import init_private_ray, quiet_tune, shutdown_private_ray

    quiet_tune()
    temp_dir = init_private_ray(num_cpus=2)
    try:
        yield ray.cluster_resources()
    finally:
        shutdown_private_ray(temp_dir)


@pytest.fixture(scope="module")
def ray_gpu_node():
    """An embedded Ray node that declares GPUS_DECLARED GPUs on this CPU machine (what `ray start
    --num-gpus` declares): Ray reserves fractions of them and gives each trial its ids
    (CUDA_VISIBLE_DEVICES) as on a GPU node, while the trials train on CPU (`device: cpu`).
    Eight logical CPUs, so that the GPUs, not the CPUs, bound how many trials run at once."""
    import ray

    from orchestrator.ray_local import init_private_ray, quiet_tune, shutdown_private_ray

    quiet_tune()
    temp_dir = init_private_ray(num_cpus=8, num_gpus=GPUS_DECLARED)
    try:
        yield ray.cluster_resources()
    finally:
        shutdown_private_ray(temp_dir)


GPUS_DECLARED = 2


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1; yields its URI."""
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def restartable_mlflow_server(tmp_path):
    """A real `mlflow server` the test can stop and start again (helpers.MlflowServer)."""
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1, one for the session (tests/postgres_server.py): tests ask it
    for new databases. Skips, naming the fix, where none can run (no server programs, no driver,
    or root without the unprivileged user that ./dev creates)."""
    from postgres_server import PostgresServer, skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_mlflow_server(tmp_path, postgres):
    """A real `mlflow server` on 127.0.0.1 over a new PostgreSQL database; yields its URI."""
    server = MlflowServer(tmp_path, backend_store_uri=postgres.new_database("mlflow"))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


# Ready means a job can be submitted: the dashboard answers first, and the head's job agent
# registers later; the head gives a submission only 10 s to find one
# (ray.dashboard.consts.WAIT_AVAILABLE_AGENT_TIMEOUT), so on a loaded machine the first submit
# fails with "No available agent". Under CI load the agent has taken over 240 s, hence the bound.
RAY_HEAD_READY_S = 600


def job_accepted(dashboard: str) -> bool:
    """Submit a no-op job; it raises until the dashboard answers and the job agent takes it."""
    from orchestrator import jobs

    jobs.client(dashboard).submit_job(entrypoint="true")
    return True


@pytest.fixture
def ray_head():
    """A real single-node Ray cluster (`ray start --head --block`); yields the dashboard URL
    once it takes jobs."""
    temp = tempfile.mkdtemp(prefix="slr-")  # short: Ray's unix socket paths are length-limited
    port, dash = free_port(), free_port()
    head = start_ray_node(temp, "head", head_port=port, dashboard_port=dash, num_cpus=2)
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        wait_for_jobs(dashboard, head, temp)
        yield dashboard
    finally:
        stop_group(head)
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_jobs(dashboard: str, head: subprocess.Popen, temp: str) -> None:
    ray_logs = Path(temp) / "session_latest" / "logs"
    wait_ready(f"the Ray head's job agent to take a job at {dashboard}", lambda: job_accepted(dashboard),
               RAY_HEAD_READY_S, head, Path(temp) / "head.log", ray_logs / "dashboard.log",
               ray_logs / "dashboard_agent.log", every=2)


@pytest.fixture
def ray_two_nodes():
    """A real two-node Ray cluster on this machine: a head and a second node (`ray start
    --address`), each with one CPU and each in its own process group (ended by SIGKILL to the
    group). A trial of two half-CPU workers under `placement: strict_spread` has a rank on each. Yields the dashboard URL
    and the two node ids once both nodes are alive and the head takes jobs. Each node has its
    own temp dir, as on two machines: sharing one, the second node's runtime-env agent would
    delete the job's unpacked working directory under the driver when its own use of it ended."""
    temps = [tempfile.mkdtemp(prefix="slr-"), tempfile.mkdtemp(prefix="slr-")]
    port, dash = free_port(), free_port()
    head = start_ray_node(temps[0], "head", head_port=port, dashboard_port=dash, num_cpus=1)
    dashboard = f"http://127.0.0.1:{dash}"
    second = None
    try:
        wait_for_jobs(dashboard, head, temps[0])
        second = start_ray_node(temps[1], "second", join=f"127.0.0.1:{port}", num_cpus=1)
        nodes: list[str] = []

        def both_alive() -> bool:
            nodes[:] = alive_nodes(dashboard)
            return len(nodes) == 2
        wait_ready("the second Ray node to join the head", both_alive, RAY_HEAD_READY_S, second,
                   Path(temps[1]) / "second.log", every=2)
        yield SimpleNamespace(dashboard=dashboard, node_ids=set(nodes))
    finally:
        for proc in (second, head):
            if proc is not None:
                stop_group(proc, grace=0)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


# --- leaving the test process ------------------------------------------------------------------
# Once, after the summary of a full run had been printed, the interpreter's own teardown crashed
# (exit 139: native threads of Ray / gRPC / the browser driver outliving the objects they use),
# turning a finished run into a failed CI step. Every result is reported by then, so the process
# leaves with pytest's own exit status and skips that teardown.
_EXIT_STATUS: list[int] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS and not hasattr(config, "workerinput"):  # not inside a pytest-xdist worker
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
