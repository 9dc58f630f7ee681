"""Starting and stopping Ray for one `scalelab run`: an embedded local instance by default,
or a connection to an existing cluster (`--address auto` inside a submitted Ray Job)."""
from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from typing import Iterator

from trainer.config import UserError

LOOPBACK = "127.0.0.1"
# Ray resolves a loopback node address to the machine's network address unless this is 0
# (ray._private.services.get_node_ip_address); with it, the GCS, raylet and workers bind 127.0.0.1.
_RAY_MULTI_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


PRIVATE_PREFIX = "scalelab-ray-"
OWNER_FILE = "owner"  # "<pid> <process start time>" of the run that made the folder


def private_temp_dir() -> str:
    """A fresh directory for one embedded Ray's session files (sockets, logs): made by mkdtemp,
    so mode 0700 and owned by us. Ray makes its own folder inside it world-writable; this
    parent keeps others out. Short, because unix socket paths are limited to ~107 characters.
    Never a predictable name: a planted `ray_current_cluster` there redirected runs. The owner
    file lets a later run remove it when this one was killed before it could."""
    parent = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
    with open(os.path.join(parent, OWNER_FILE), "w") as fh:
        fh.write(f"{os.getpid()} {_start_time(os.getpid())}")
    return os.path.join(parent, "r")


def remove_stale_private_dirs(root: str | None = None) -> list[str]:
    """Remove the private Ray folders of earlier runs whose owner process is gone (a hard-killed
    run cannot clean up after itself) and that no live process still uses. Only folders of this
    user with an owner file are touched. Returns the folders removed."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(PRIVATE_PREFIX)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(root, name)
        try:
            st = os.lstat(folder)
            with open(os.path.join(folder, OWNER_FILE)) as fh:
                pid_text, _, started = fh.read().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if _alive(pid, started) or _in_use(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not
    taken for the owner; '' elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or not _start_time(pid) or _start_time(pid) == started


def _in_use(folder: str) -> bool:
    """Whether a live process names the folder on its command line (Ray's raylet and GCS do)."""
    needle = folder.encode()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle in fh.read():
                    return True
        except OSError:
            continue
    return False


def init_private_ray(num_cpus: int | None = None, **kwargs) -> str:
    """Start an embedded single-node Ray that only this user can reach: listening on 127.0.0.1,
    in a private temp dir, started with umask 077 (its logs can hold the environment), and never
    attached to an existing cluster (address="local" ignores RAY_ADDRESS and
    ray_current_cluster). Returns the temp dir, for `shutdown_private_ray`."""
    import ray  # here and below: seconds to import, only when a sweep runs
    from ray._private import ray_constants

    remove_stale_private_dirs()
    temp_dir = private_temp_dir()
    saved_env, saved_flag = os.environ.get(_RAY_MULTI_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    saved_umask = os.umask(0o077)
    os.environ[_RAY_MULTI_NODE_ENV] = "0"   # Ray's own processes, started below
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process (read when resolving addresses)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                 _node_ip_address=LOOPBACK, **kwargs)
    except BaseException:
        shutil.rmtree(os.path.dirname(temp_dir), ignore_errors=True)
        raise
    finally:
        os.umask(saved_umask)
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_RAY_MULTI_NODE_ENV, None)
        else:
            os.environ[_RAY_MULTI_NODE_ENV] = saved_env
    return temp_dir


def shutdown_private_ray(temp_dir: str) -> None:
    import ray  # seconds to import, only when a sweep runs

    ray.shutdown()
    shutil.rmtree(os.path.dirname(temp_dir), ignore_errors=True)


# Start-up chatter that is no news to the user of a run, each logger at the level it may speak
# from: MLflow's (and alembic's) INFO lines on creating or checking its database, and Ray's
# notice that its token authentication is on (or off) by default for the cluster it starts,
# which only ever listens on 127.0.0.1 here (init_private_ray).
NOISY_LOGGERS = {"mlflow.store.db.utils": logging.WARNING, "alembic": logging.WARNING,
                 "ray._private.authentication.authentication_token_setup": logging.ERROR}


def quiet_startup() -> None:
    """Keep a run's terminal to scalelab's own lines and real warnings: NOISY_LOGGERS at their
    levels. Cheap (no Ray import): applied when this module is imported, as `scalelab run`
    opens MLflow before it starts Ray."""
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


quiet_startup()


def keep_repeated_lines() -> None:
    """Ray's log deduplication folds a trial's progress lines, alike but for their numbers, into
    "[repeated 3x across cluster]": off, unless RAY_DEDUP_LOGS says otherwise. Ray read the
    variable when it was imported, so its flag is set too."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from ray._private import ray_constants, ray_logging  # Ray: only when a sweep runs

    ray_logging.RAY_DEDUP_LOGS = ray_constants.env_bool("RAY_DEDUP_LOGS", True)


def quiet_tune() -> None:
    """Tune's tables and per-trial tracebacks drown our one-line progress; per-trial result
    files are redundant with MLflow. Set before the Tuner is built."""
    quiet_startup()
    keep_repeated_lines()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")
    # Failed trials are reported by our summary; these loggers would repeat them as noise.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis", "ray.tune.execution.tune_controller"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[dict]:
    """Yields the cluster's resources. Re-uses a Ray already initialised in this process
    (tests, notebooks) and leaves it running; otherwise starts/connects and shuts down after."""
    import ray  # seconds to import, only when a sweep runs

    quiet_tune()
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot connect to the Ray cluster at {address!r}: {err}") from None
        try:
            yield ray.cluster_resources()
        finally:
            ray.shutdown()  # disconnects from the cluster
        return
    temp_dir = init_private_ray(num_cpus, logging_level=logging.WARNING)
    try:
        yield ray.cluster_resources()
    finally:
        shutdown_private_ray(temp_dir)  # stops only the instance we started
