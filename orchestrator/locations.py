"""Where a sweep's results live: the MLflow tracking URI, the storage directory (checkpoints,
report journals, Tune state) and a search sweep's Optuna study. `Locations.resolve` decides all
three once per command from flags, environment and the sweep file; `plan`, `validate` and
`run` all call it, so they name the same places."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from trainer.config import UserError

from .layout import TRACKING_URI_ENV, resolve_tracking_uri, sqlite_path
from .uri_check import study_url_problem, tracking_uri_problem

DEFAULT_STORAGE = ".scalelab"
# On a cluster the driver's working directory is a Ray Job's throwaway copy: keep state in home.
CLUSTER_STORAGE = os.path.join("~", ".scalelab")
STUDY_FILE = "optuna.db"
STORAGE_HELP = (f"directory for checkpoints, Tune state and the default Optuna study (default: ./{DEFAULT_STORAGE}, "
                f"or {CLUSTER_STORAGE} with --address; on a multi-node cluster use a shared filesystem)")


@dataclass(frozen=True)
class Locations:
    tracking_uri: str
    storage: str                  # absolute
    study_url: str | None = None  # search sweeps: the Optuna storage URL of the study

    @classmethod
    def resolve(cls, spec, tracking_uri: str | None = None, storage: str | None = None,
                on_cluster: bool = False) -> "Locations":
        """`tracking_uri` and `storage` are the flags (None: not given)."""
        uri = resolve_tracking_uri(tracking_uri, spec.tracking_uri)
        problem = tracking_uri_problem(uri)
        if problem:  # judged by scheme before anything connects (MLflow would retry for minutes)
            where = ("--tracking-uri" if tracking_uri else f"${TRACKING_URI_ENV}" if os.environ.get(TRACKING_URI_ENV)
                     else f"{spec.source}: tracking_uri")
            raise UserError(f"{where}: {problem}")
        folder = storage_dir(storage, on_cluster)
        study = None
        if spec.search is not None:
            study = default_study_url(uri, folder) if spec.search.storage_is_default else spec.search.storage
            problem = study_url_problem(study)
            if problem:
                raise UserError(f"{spec.source}: search.storage: {problem}")
        return cls(uri, folder, study)

    def trials_root(self, experiment: str) -> str:
        return trials_root(self.storage, experiment)

    @property
    def tune_dir(self) -> str:
        return os.path.join(self.storage, "tune")


def storage_dir(flag: str | None, on_cluster: bool = False) -> str:
    return os.path.abspath(os.path.expanduser(flag or (CLUSTER_STORAGE if on_cluster else DEFAULT_STORAGE)))


def trials_root(storage: str, experiment: str) -> str:
    """One directory per trial below it, named by trial hash (checkpoints, report journal)."""
    return os.path.join(storage, "trials", safe_component(experiment))


MAX_COMPONENT = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=\-]")


def safe_component(name: str) -> str:
    """A name (a sweep's experiment, ...) as one path component that stays inside its folder:
    anything but letters, digits and `_ - . + =` becomes '_', no leading '.', at most
    MAX_COMPONENT characters. A name that is already safe is kept as it is; one that had to be
    changed gets 8 hex of its hash appended, so two different names never share a folder.
    Every place where a name from a sweep file becomes a path goes through here."""
    name = str(name)
    if name and len(name) <= MAX_COMPONENT and not _UNSAFE.search(name) and not name.startswith("."):
        return name
    cleaned = _UNSAFE.sub("_", name).lstrip(".") or "_"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:MAX_COMPONENT - 9]}-{digest}"


def default_study_url(tracking_uri: str | None, folder: str) -> str:
    """optuna.db next to an SQLite MLflow database, else in `folder` (never in a Ray Job's
    throwaway working directory); absolute, so Ray workers started elsewhere agree."""
    db = sqlite_path(tracking_uri) if tracking_uri else None
    folder = os.path.dirname(os.path.abspath(db)) if db else os.path.abspath(folder)
    return "sqlite:///" + os.path.join(folder, STUDY_FILE)


def absolute_sqlite(url: str) -> str:
    """Relative SQLite paths are relative to the working directory: pin them now, so the
    driver and any worker agree."""
    db = sqlite_path(url)
    if db is None or os.path.isabs(db) or db == ":memory:" or db == "":
        return url
    return "sqlite:///" + os.path.abspath(db) + url[len("sqlite:///") + len(db):]
