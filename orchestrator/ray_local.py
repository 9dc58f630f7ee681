"""Starting and stopping Ray for one `scalelab run`: an embedded local instance by default,
or a connection to an existing cluster (`--address auto` inside a submitted Ray Job)."""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from trainer.config import UserError


def ray_temp_dir() -> str:
    """Ray's session files in a short directory of our own: Ray's unix sockets live there and
    socket paths are limited to ~107 characters."""
    return os.path.join(tempfile.gettempdir(), f"scalelab-ray-{os.getuid()}")


def quiet_tune() -> None:
    """Tune's tables and per-trial tracebacks drown our one-line progress; per-trial result
    files are redundant with MLflow. Set before the Tuner is built."""
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
    import ray

    quiet_tune()
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot connect to the Ray cluster at {address!r}: {err}") from None
    else:
        os.makedirs(ray_temp_dir(), exist_ok=True)
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=ray_temp_dir(),
                 logging_level=logging.WARNING)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()  # disconnects from a cluster; stops only the instance we started
