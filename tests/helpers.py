"""What several test files need, in one place: the tiny model, sweep files, a trial's journal,
MLflow queries, and child processes (`scalelab`, `mlflow server`) started and ended by process
group. Test modules `from helpers import ...`; conftest.py builds its fixtures on these."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from orchestrator.layout import KIND_SWEEP, KIND_TRIAL, TAG_HASH, TAG_KIND
from orchestrator.locations import trials_root
from orchestrator.faults import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The smallest model the tests train: a trial of it runs in about a second on one CPU thread.
TINY_MODEL = {"d_model": 32, "head_dim": 16, "n_layers": 1, "seq_len": 32, "batch_size": 4}
# For the trainer's own tests: reports at steps 8, 16 and 24.
TINY_TRAIN = {**TINY_MODEL, "steps": 24, "eval_interval": 8, "eval_batches": 2, "warmup_steps": 4, "threads": 1}
# The base of a sweep file: reports at steps 10 and 20.
TINY_BASE = {**TINY_MODEL, "steps": 20, "warmup_steps": 2, "eval_interval": 10, "eval_batches": 1,
             "device": "cpu", "threads": 1}


# --- sweep files ---------------------------------------------------------------------------------

def write_sweep(directory: Path, name: str, **sections) -> Path:
    """A sweep file `<name>.yaml` with TINY_BASE (+ `base` overrides) and the given sections."""
    doc = {"name": name, "experiment": name, "base": {**TINY_BASE, **sections.pop("base", {})},
           "resources": {"cpu": 1, "gpu": 0}, "retries": 1}
    doc.update(sections)
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def study_storage(directory: Path) -> str:
    """The Optuna storage of the search sweeps that write_search_sweep writes in `directory`."""
    return "sqlite:///" + str(Path(directory) / "optuna.db")


def write_search_sweep(directory: Path, name: str, num_samples: int, study_name: str = "lr-study",
                       storage: str | None = None, **sections) -> Path:
    """A search sweep: `num_samples` learning rates in [1e-3, 1e-2] (sampler seed 0), best
    final_val_loss, its study at `storage` (default `directory`/optuna.db), two trials at once."""
    search = {"metric": "final_val_loss", "mode": "min", "num_samples": num_samples,
              "storage": storage or study_storage(directory), "study_name": study_name, "sampler_seed": 0,
              "space": {"lr": {"log_uniform": [1e-3, 1e-2]}}}
    return write_sweep(directory, name, **{"search": search, "concurrency": 2, **sections})


def complete_trials(storage: str, study_name: str = "lr-study") -> list:
    """The Optuna trials of a study that completed."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


# --- what a sweep left behind --------------------------------------------------------------------

def journal(storage: Path, experiment: str, trial_hash: str) -> list[dict]:
    """A trial's journaled reports (<storage>/trials/<experiment>/<hash>/reports.jsonl)."""
    path = Path(trials_root(str(storage), experiment)) / trial_hash / "reports.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def sweep_runs(uri: str, experiment: str):
    """(client, parent runs, trial runs) of an experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_SWEEP]
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TRIAL]
    return client, parents, trials


def trials_by_hash(uri: str, experiment: str) -> dict[str, list]:
    """The trial runs of an experiment by trial hash (a list each: a hash must have one)."""
    by_hash: dict[str, list] = {}
    for run in sweep_runs(uri, experiment)[2]:
        by_hash.setdefault(run.data.tags[TAG_HASH], []).append(run)
    return by_hash


def assert_history_matches_reports(client, run, reports: list[dict], keys=None) -> None:
    """Every numeric key of the reports (or only `keys`) is in the run's MLflow history exactly
    once at its step, with the same value."""
    expected: dict[str, dict[int, float]] = {}
    for entry in reports:
        m = entry["metrics"]
        for key, value in m.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, {})[int(m["step"])] = float(value)
    assert "train_loss" in expected and "final_val_loss" in expected
    for key in keys or expected:
        by_step = expected[key]
        history = client.get_metric_history(run.info.run_id, key)
        steps = [h.step for h in history]
        assert sorted(steps) == sorted(by_step), (key, steps, sorted(by_step))
        for h in history:
            want = by_step[h.step]
            assert (math.isnan(h.value) and math.isnan(want)) or math.isclose(h.value, want, rel_tol=1e-9), key


# --- child processes -----------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this interpreter's bin first on PATH (a Ray Job's
    `python` is ours too), output unbuffered; no tracking URI or injected fault leaks in from
    the caller's environment."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("MLFLOW_TRACKING_URI", FAULT_ENV):
        env.pop(name, None)
    env.update(extra)
    return env


def start_scalelab(argv: list[str], cwd: Path, log: Path | None = None, **popen) -> subprocess.Popen:
    """`scalelab ARGV` from this checkout, as a child process in its own process group (end it
    with stop_group), its output to `log` unless `popen` says otherwise."""
    if log is not None:
        popen.update(stdout=open(log, "w"), stderr=subprocess.STDOUT)
    env = venv_env(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *argv], cwd=str(cwd), env=env,
                            start_new_session=True, **popen)


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left (grace=0: SIGKILL at once)."""
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


def start_ray_node(temp: str, name: str, num_cpus: int, head_port: int | None = None,
                   dashboard_port: int | None = None, join: str | None = None, num_gpus: int | None = None
                   ) -> subprocess.Popen:
    """`ray start --block` on 127.0.0.1 in its own process group, its output in `<temp>/<name>.log`:
    a head (`head_port`, `dashboard_port`) or a node joining one (`join`: "127.0.0.1:PORT").
    A joining node needs RAY_AUTH_MODE=token to present the head's token (~/.ray/auth_token):
    Ray ≥ 2.5x turns token auth on for `ray start --head` but not for a node that joins."""
    args = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus", str(num_cpus),
            "--temp-dir", temp, "--disable-usage-stats",
            # its own port: Ray's default (52365) is taken by any other node on this machine, and a
            # head whose agent cannot bind it never takes a job ("No available agent")
            "--dashboard-agent-listen-port", str(free_port())]
    env = {"RAY_TMPDIR": temp}
    if join is None:
        args += ["--head", "--port", str(head_port), "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(dashboard_port)]
    else:
        args += ["--address", join]
        env["RAY_AUTH_MODE"] = "token"
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    return subprocess.Popen(args, stdout=open(Path(temp) / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=venv_env(**env))


def alive_nodes(dashboard: str) -> list[str]:
    """The ids of the cluster's alive nodes, from the dashboard (with the auth token)."""
    from orchestrator.jobs import auth_headers

    request = urllib.request.Request(f"{dashboard}/nodes?view=summary", headers=auth_headers())
    with urllib.request.urlopen(request, timeout=10) as answer:
        summary = json.load(answer)["data"]["summary"]
    return [n["raylet"]["nodeId"] for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]


def log_tail(*logs: Path, chars: int = 3000) -> str:
    """The end of each log that exists, headed by its name: what a time-out message shows."""
    parts = []
    for log in logs:
        try:
            parts.append(f"--- {log.name}:\n{log.read_text(errors='replace')[-chars:]}")
        except OSError:
            parts.append(f"--- {log.name}: (not written)")
    return "\n".join(parts)


def wait_ready(what: str, ready, timeout: float, proc: subprocess.Popen, *logs: Path, every: float = 0.5) -> None:
    """Poll `ready()` (true once `what` is ready; an exception counts as not yet) until it is
    true. Fails at once if `proc` exits, and after `timeout` seconds; both failures name what
    was awaited, the last error seen and the tail of the process's logs."""
    deadline, last = time.monotonic() + timeout, "none"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited ({proc.returncode}) before {what}:\n{log_tail(*logs)}")
        try:
            if ready():
                return
        except Exception as err:  # noqa: BLE001 - not ready yet; kept for the message
            last = f"{type(err).__name__}: {err}"[:500]
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:.0f} s for {what}; last error: {last}\n{log_tail(*logs)}")
        time.sleep(every)


def answers_http(url: str) -> bool:
    """True once `url` answers at all (an HTTP error such as 401 is an answer: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    wait_ready(f"{url} to answer", lambda: answers_http(url), timeout, proc, log)


JOB_ENDS = ("SUCCEEDED", "FAILED", "STOPPED")


def wait_for_job(address: str, job_id: str, timeout: float = 420) -> str:
    """The Ray Job's status once it ended (JOB_ENDS), or its status after `timeout` seconds."""
    from orchestrator import jobs

    deadline = time.time() + timeout
    status = ""
    while time.time() < deadline:
        status = jobs.job_status(address, job_id)
        if status in JOB_ENDS:
            return status
        time.sleep(2)
    return status


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (one worker, job execution off) over a SQLite file in
    `directory`, or over `backend_store_uri` (a PostgreSQL database, say); it can be stopped
    (process group) and started again on the same port and database: a tracking outage."""

    READY_S = 300  # a loaded CI machine has taken over a minute to import and serve

    def __init__(self, directory: Path, backend_store_uri: str | None = None):
        self.dir, self.port = Path(directory), free_port()
        self.backend_store_uri = backend_store_uri or "sqlite:///" + str(self.dir / "srv.db")
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.dir / f"mlflow-server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(self.port),
             "--artifacts-destination", str(self.dir / "artifacts")],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
            # the store's URI through the environment: a password in it stays off the process list
            env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_BACKEND_STORE_URI=self.backend_store_uri))
        try:
            wait_http(f"{self.uri}/health", self.READY_S, self.proc, log)
        except BaseException:
            self.stop(grace=0)
            raise

    def stop(self, grace: float = 5.0) -> None:
        """Stop it (grace=0: SIGKILL at once, a crash)."""
        if self.proc is not None:
            stop_group(self.proc, grace)
            self.proc = None
