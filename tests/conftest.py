"""Shared fixtures: tiny sweep files, MLflow URIs in tmp dirs, one embedded Ray per module, a
real `ray start --head` and a real `mlflow server` (each in its own process group, ended by
group id — never `ray stop`, which would kill every Ray on the machine)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

# A trial of this size trains in about a second on one CPU thread.
TINY_BASE = {"d_model": 32, "head_dim": 16, "n_layers": 1, "seq_len": 32, "batch_size": 4,
             "steps": 20, "warmup_steps": 2, "eval_interval": 10, "eval_batches": 1,
             "device": "cpu", "threads": 1}
BIN = Path(sys.executable).parent


def write_sweep(directory: Path, name: str, **sections) -> Path:
    """A sweep file `<name>.yaml` with TINY_BASE (+ `base` overrides) and the given sections."""
    doc = {"name": name, "experiment": name, "base": {**TINY_BASE, **sections.pop("base", {})},
           "resources": {"cpu": 1, "gpu": 0}, "retries": 1}
    doc.update(sections)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def sweep_writer():
    """`write_sweep` for module-scoped fixtures (test modules cannot import conftest)."""
    return write_sweep


@pytest.fixture(scope="session")
def process_tools():
    """free_port, wait_http and stop_group for tests that start servers themselves."""
    from types import SimpleNamespace

    return SimpleNamespace(free_port=free_port, wait_http=wait_http, stop_group=stop_group)


@pytest.fixture
def tiny_sweep(tmp_path):
    return lambda name, **sections: write_sweep(tmp_path, name, **sections)


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    return "sqlite:///" + str(tmp_path / "mlflow.db")


@pytest.fixture(scope="module")
def shared_tracking_uri(tmp_path_factory) -> str:
    """One SQLite MLflow per module (creating its tables takes seconds); tests use their own
    experiment names in it."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:  # it answers (perhaps asking for a token): it is up
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def wait_job_agent(dashboard: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    """The dashboard answers before the head node's job agent has registered, and the head gives
    a submission only 10 s to find one (ray.dashboard.consts.WAIT_AVAILABLE_AGENT_TIMEOUT): on a
    loaded machine the first submit then fails with "No available agent". Submit a no-op job
    until one is accepted."""
    from orchestrator import jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray head exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            jobs.client(dashboard).submit_job(entrypoint="true")
            return
        except Exception as err:  # noqa: BLE001 - agent not registered yet
            if "No available agent" not in str(err):
                raise
            time.sleep(2)
    raise RuntimeError(f"the job agent of {dashboard} did not register within {timeout}s")


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this interpreter's bin first on PATH, so a Ray
    Job's `python` is ours too."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (one worker, job execution off); yields its URI."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", "sqlite:///" + str(tmp_path / "srv.db"),
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


@pytest.fixture
def ray_head():
    """A real single-node Ray cluster (`ray start --head --block`); yields the dashboard URL."""
    temp = tempfile.mkdtemp(prefix="slr-")  # short: Ray's unix socket paths are length-limited
    port, dash = free_port(), free_port()
    log = Path(temp) / "head.log"
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
         "--temp-dir", temp, "--disable-usage-stats"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=venv_env(RAY_TMPDIR=temp))
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", 240, proc, log)
        wait_job_agent(f"http://127.0.0.1:{dash}", 240, proc, log)
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


class MlflowServer:
    """A real `mlflow server` that a test can stop (process group) and start again on the same
    port and database: a tracking outage."""

    def __init__(self, directory: Path):
        self.dir, self.port = directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.dir / f"mlflow-server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", "sqlite:///" + str(self.dir / "srv.db"),
             "--artifacts-destination", str(self.dir / "artifacts")],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
            env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        wait_http(f"{self.uri}/health", 180, self.proc, log)

    def stop(self, grace: float = 5.0) -> None:
        """Stop it (grace=0: SIGKILL at once, a crash)."""
        if self.proc is not None:
            stop_group(self.proc, grace)
            self.proc = None


@pytest.fixture
def restartable_mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
