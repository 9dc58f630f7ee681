"""A run removes the private Ray folders that earlier, hard-killed runs left behind, and only
those (orchestrator/ray_local.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

from orchestrator import ray_local


def make(root, name, pid, started=""):
    folder = root / (ray_local.PRIVATE_PREFIX + name)
    (folder / "r" / "session_latest").mkdir(parents=True)
    (folder / ray_local.OWNER_FILE).write_text(f"{pid} {started}")
    return folder


def test_folders_of_dead_runs_go_and_live_ones_stay(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = make(tmp_path, "dead", dead.pid)
    mine = make(tmp_path, "mine", os.getpid(), ray_local._start_time(os.getpid()))
    reused = make(tmp_path, "reused", os.getpid(), "1")  # our pid, but another process's start time
    no_owner = tmp_path / (ray_local.PRIVATE_PREFIX + "old")
    no_owner.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    removed = ray_local.remove_stale_private_dirs(str(tmp_path))
    assert sorted(removed) == sorted([str(gone), str(reused)])
    assert mine.exists() and no_owner.exists() and other.exists() and not gone.exists()


def test_a_folder_a_live_process_still_uses_stays(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = make(tmp_path, "orphan", dead.pid)
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(folder / "r")])
    deadline = time.monotonic() + 30  # until the child has exec'd, /proc shows pytest's command line
    while str(folder).encode() not in Path(f"/proc/{user.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert ray_local.remove_stale_private_dirs(str(tmp_path)) == []
        assert folder.exists()
    finally:
        user.kill()
        user.wait()
    assert ray_local.remove_stale_private_dirs(str(tmp_path)) == [str(folder)]


def test_a_new_private_folder_names_its_owner():
    temp = ray_local.private_temp_dir()
    parent = os.path.dirname(temp)
    try:
        pid, started = open(os.path.join(parent, ray_local.OWNER_FILE)).read().split(" ")
        assert int(pid) == os.getpid() and started == ray_local._start_time(os.getpid())
        assert oct(os.stat(parent).st_mode & 0o777) == "0o700"
    finally:
        os.remove(os.path.join(parent, ray_local.OWNER_FILE))
        os.rmdir(parent)
