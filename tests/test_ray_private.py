"""The embedded Ray of `scalelab run` (no --address) is private: loopback only, a fresh 0700
directory, and nothing in the environment or a predictable temp path can redirect it.
Starts Ray once."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from helpers import free_port
from orchestrator.ray_local import private_temp_dir, ray_session


def test_private_temp_dirs_are_fresh_and_0700():
    a, b = private_temp_dir(), private_temp_dir()
    try:
        assert a != b
        for d in (a, b):
            parent = os.path.dirname(d)
            st = os.stat(parent)
            assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
            assert len(os.path.join(d, "session_xxxx_xx_xx_xx_xx_xx_xxxxxx_xxxx", "sockets", "raylet.12345")) < 107
    finally:
        for d in (a, b):
            shutil.rmtree(os.path.dirname(d))  # it holds the owner file (ray_local.OWNER_FILE)


@pytest.mark.slow  # starts Ray
def test_embedded_ray_is_loopback_private_and_cannot_be_redirected(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    # What redirected `scalelab run` before: the old predictable folder with a planted
    # ray_current_cluster file, and RAY_ADDRESS in the environment. The planted address is a
    # loopback one that nothing listens on: tests name no address outside this machine.
    planted_address = f"127.0.0.7:{free_port('127.0.0.7')}"
    old = os.path.join(tempfile.gettempdir(), f"scalelab-ray-{os.getuid()}")
    planted = os.path.join(old, "ray_current_cluster")
    made_old = not os.path.exists(old)
    os.makedirs(old, exist_ok=True)
    had_planted = os.path.exists(planted)
    if not had_planted:
        with open(planted, "w") as fh:
            fh.write(planted_address)
    monkeypatch.setenv("RAY_ADDRESS", planted_address)
    try:
        with ray_session(None, num_cpus=1):
            node = ray._private.worker._global_node
            assert node.node_ip_address == "127.0.0.1"
            assert node.gcs_address.split(":")[0] == "127.0.0.1" and node.gcs_address != planted_address
            session_dir = Path(node.get_session_dir_path())
            private = Path(node.get_temp_dir_path()).parent
            assert not private.is_relative_to(old)  # path components, not a string prefix
            assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
            assert session_dir.is_relative_to(private)
            assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None  # restored after start
        assert not ray.is_initialized()
        assert not os.path.exists(private)  # removed with its logs
    finally:
        if not had_planted:
            os.remove(planted)
        if made_old:
            os.rmdir(old)
