"""A trial's folder under the sweep storage, keyed by trial hash, so that resuming never depends
on Tune's experiment state (the one place that names its parts):

    <trials_root>/<hash>/checkpoints/step_*   the trainer's checkpoints
    <trials_root>/<hash>/reports.jsonl        the journal: every report, stamped, written before it is sent
    <trials_root>/<hash>/writer.lock          held by the one process writing the folder
    <trials_root>/<hash>/placement.jsonl      one line per training attempt: node, GPUs (placement.py)

On (re)start the journal is replayed up to the checkpoint the trial resumes from; after the
final report only the final checkpoint is kept.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

CHECKPOINTS = "checkpoints"
JOURNAL_FILE = "reports.jsonl"
PLACEMENT_FILE = "placement.jsonl"


def trial_folder(trials_root: str | Path, trial_hash: str) -> Path:
    """The folder of one trial (`locations.trials_root` gives the root of an experiment's)."""
    return Path(trials_root) / trial_hash


def checkpoints_of(folder: Path) -> Path:
    return folder / CHECKPOINTS


class Journal:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: it was never sent
                    break
        return entries

    def rewrite(self, entries: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(json.dumps(entry) + "\n")
        os.replace(tmp, self.path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def resume_points(entries: list[dict], trial_dir: Path) -> dict[int, tuple[str, list[dict]]]:
    """step -> (journaled checkpoint still on disk, the entries up to it: those are replayed;
    later ones will be produced again by training)."""
    found = {}
    for i, entry in enumerate(entries):
        ckpt = entry.get("checkpoint")
        if ckpt and (trial_dir / ckpt / "state.pt").is_file():
            found[int(entry["metrics"]["step"])] = (str(trial_dir / ckpt), entries[:i + 1])
    return found


def resume_point(entries: list[dict], trial_dir: Path) -> tuple[str | None, list[dict]]:
    """The newest journaled checkpoint still on disk, and the entries up to it."""
    found = resume_points(entries, trial_dir)
    return found[max(found)] if found else (None, [])


# --- one writer per trial folder ------------------------------------------------------------

LOCK_FILE = "writer.lock"
LOCK_NOTE_S = 30.0   # how often a waiting worker says it is still waiting


@contextmanager
def trial_lock(trial_dirs: list[Path], note=print):
    """Hold an exclusive lock on each trial folder (sorted order: two packs sharing members
    cannot deadlock) while this worker reads, trains and writes it. Another process that holds
    one — a `scalelab run` whose claim lapsed while MLflow was unreachable, still training —
    is waited for: once it ends, the journal holds what it wrote and this worker resumes or
    replays from there, so a trial folder never has two writers. The claim in MLflow (which
    invocation runs a trial) is checked before; this lock is the storage's own guarantee
    (flock: local disks, and NFS whose clients map it to byte-range locks)."""
    held = []
    try:
        for trial_dir in sorted(trial_dirs):
            trial_dir.mkdir(parents=True, exist_ok=True)
            fh = open(trial_dir / LOCK_FILE, "a+")
            held.append(fh)
            waited = 0.0
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if waited % LOCK_NOTE_S == 0:
                        note(f"trial {trial_dir.name}: another process is writing its folder; waiting for it "
                             "to end (its results are then replayed, not trained again)")
                    time.sleep(1.0)
                    waited += 1.0
        yield
    finally:
        for fh in held:
            fh.close()  # closing releases the lock


def prune_checkpoints(directory: Path, keep: str | None, trial_dir: Path) -> None:
    """After the final report only the final checkpoint is worth its disk space."""
    for path in directory.glob("step_*"):
        if keep is None or path != trial_dir / keep:
            shutil.rmtree(path, ignore_errors=True)


def open_folder(trials_root: str | Path, trial_hash: str) -> tuple[Path, Journal]:
    """The trial's folder (made, with its checkpoints folder, if new) and its journal."""
    folder = trial_folder(trials_root, trial_hash)
    checkpoints_of(folder).mkdir(parents=True, exist_ok=True)
    return folder, Journal(folder / JOURNAL_FILE)
