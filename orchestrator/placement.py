"""Where a trial trained: one line per training attempt in its folder
(trial_folder.PLACEMENT_FILE) naming the Ray node, the process and the GPUs Ray gave it, with
the attempt's start and end. It answers "which node ran this trial, on which GPU" after the
fact — on a multi-node cluster, under fractional `gpu:` shares — from the shared storage alone.

A line is written when the attempt ends, also when it raises; a worker killed outright writes
none (its journal still holds its reports).
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .trial_folder import PLACEMENT_FILE

VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"  # what Ray sets to the GPUs it assigned


def _in_ray_worker() -> bool:
    """True in a process Ray started for a task or actor; False in a driver (a test or
    `scalelab run` that called ray.init), where Ray's per-worker calls raise."""
    import ray  # the trainable's process has it imported already

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def here() -> dict:
    """This process's Ray node (id and address), host, pid, what Ray reserved for it (`assigned`:
    {"CPU": 1.0, "GPU": 0.5}), the GPU ids Ray gave it and the CUDA_VISIBLE_DEVICES it sees.
    Outside a Ray worker the Ray fields are None."""
    import ray  # the trainable's process has it imported already

    node_id = node_ip = gpu_ids = assigned = None
    if _in_ray_worker():
        context = ray.get_runtime_context()
        node_id, node_ip = context.get_node_id(), ray.util.get_node_ip_address()
        assigned = context.get_assigned_resources()
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    return {"node_id": node_id, "node_ip": node_ip, "hostname": socket.gethostname(), "pid": os.getpid(),
            "assigned": assigned, "gpu_ids": gpu_ids, "cuda_visible_devices": os.environ.get(VISIBLE_DEVICES_ENV)}


def hide_unassigned_gpus() -> None:
    """A trial Ray gave no GPU sees none. Ray sets CUDA_VISIBLE_DEVICES only for a worker it
    gave GPUs; a `gpu: 0` trial would otherwise see every GPU of its node and `device: auto`
    would train on one that other trials reserved. Called before torch first touches CUDA."""
    import ray  # the trainable's process has it imported already

    if _in_ray_worker() and not ray.get_gpu_ids():
        os.environ[VISIBLE_DEVICES_ENV] = ""


@contextmanager
def recorded(trial_dirs: list[Path], rank: int | None = None) -> Iterator[dict]:
    """Around one training attempt of a trial (or of a fused pack: each member's folder gets
    the line): appends {here(), rank, started, ended, ok} to each folder's placement file. A
    trial trained by several processes (data parallel) gets one line from each, with its rank."""
    where, started, ok = {**here(), "rank": rank}, _now_ms(), False
    try:
        yield where
        ok = True
    finally:
        line = json.dumps({**where, "started": started, "ended": _now_ms(), "ok": ok})
        for trial_dir in trial_dirs:
            with open(Path(trial_dir) / PLACEMENT_FILE, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def attempts(trial_dir: Path) -> list[dict]:
    """The placement lines of a trial folder, oldest first ([] when it never trained here); a
    line cut short by a kill mid-write is left out."""
    path = Path(trial_dir) / PLACEMENT_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def _now_ms() -> int:
    return int(time.time() * 1000)
