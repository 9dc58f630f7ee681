"""The shape of a sweep file (pydantic): top-level keys, their types and allowed values.
Training keys inside `base`/`grid`/`zip`/`derived`/`search.space` are checked against
TrainConfig afterwards (spec.py), so that errors can name grid points."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer import metrics
from trainer.config import MAX_SEED
from trainer.errors import brief

from .fuse import DEFAULT_FUSE, FUSE_CHOICES, check_fuse
from .trial import PLACEMENTS
from .uri_check import study_url_problem, tracking_uri_problem

# Metrics a search may optimise: the trainer's report and final keys (CONTRACTS.md).
METRICS = (metrics.FINAL_VAL_LOSS, metrics.MIN_VAL_LOSS, metrics.FINAL_TRAIN_LOSS, metrics.VAL_LOSS,
           metrics.TRAIN_LOSS, metrics.TOKENS_PER_S, metrics.MFU, metrics.WALL_TIME_S, metrics.GRAD_NORM)
DISTRIBUTIONS = ("log_uniform", "uniform", "int", "categorical")
MAX_SEEDS = 10_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_NAME_LENGTH = 100   # names become folder names (Ray's run folder, the trials folder)
# Counts no machine would run: a typo (1e9) or a unit slip, refused rather than planned.
MAX_CONCURRENCY = 10_000
MAX_RETRIES = 100
MAX_SAMPLES = 100_000
MAX_WORKERS = 1024
# Control characters (NUL, newline, ANSI escapes) in a name end up in folder names, MLflow and
# terminals; a description may hold line breaks and tabs.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ResourcesFile(_Strict):
    cpu: float = Field(1.0, gt=0, le=1024, strict=True, description="CPUs reserved per trial")
    gpu: float | Literal["auto"] = Field(
        0.0, description="GPUs per trial: 0, a fraction (0.25), a whole number, or 'auto' "
        "(a fraction from the trial's estimated memory)")
    gpu_memory_gb: float = Field(80.0, gt=0, le=1e6, strict=True, description="GPU memory assumed by gpu: auto (GiB)")
    workers: int = Field(1, description="data-parallel workers per trial (Ray Train, PyTorch DDP), each with this "
                         "cpu and gpu; the trial's result does not depend on it")
    placement: str | None = Field(None, description="how the workers lie over the nodes: pack (default: as few "
                                  "nodes as fit them), spread, strict_pack (one node) or strict_spread (a node each)")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"expected a whole number of workers from 1 to {MAX_WORKERS} (e.g. workers: 2), "
                             f"got {brief(value)}")
        return value

    @field_validator("placement", mode="before")
    @classmethod
    def _placement(cls, value: Any) -> Any:
        if value not in PLACEMENTS:
            raise ValueError(f"expected one of {', '.join(PLACEMENTS)} (e.g. placement: spread), got {brief(value)}")
        return value

    @model_validator(mode="after")
    def _placement_of_several(self) -> "ResourcesFile":
        if self.placement is not None and self.workers == 1:
            raise ValueError(f"placement: {self.placement} places the workers of a data-parallel trial, but workers "
                             "is 1; set workers: 2 or more, or remove placement")
        return self

    @model_validator(mode="after")
    def _one_gpu_per_worker(self) -> "ResourcesFile":
        if self.workers > 1 and self.gpu not in (0, 1, "auto"):
            raise ValueError(f"with workers: {self.workers} each worker takes one whole GPU (DDP over NCCL runs one "
                             f"rank per GPU), got gpu: {self.gpu}; set gpu: 1 (or 0 to train on CPUs)")
        return self

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 64:
            raise ValueError(f"expected a number of GPUs from 0 to 64 (e.g. 0.25) or 'auto', got {brief(value)}")
        if value > 1 and value != int(value):
            raise ValueError(f"more than one GPU must be a whole number, got {value}")
        return value


def _plain_name(value: Any) -> Any:
    if isinstance(value, str) and CONTROL.search(value):
        raise ValueError("a study name may not hold control characters (NUL, tabs, line breaks, escapes)")
    return value


def _study_url(value: Any) -> Any:
    problem = study_url_problem(value) if isinstance(value, str) else None
    if problem:
        raise ValueError(problem)
    return value


class FromStudyFile(_Strict):
    storage: str | None = Field(None, description="optuna storage URL, e.g. sqlite:///optuna.db (default: where "
                                "`scalelab run` puts a search sweep's study: optuna.db beside the SQLite MLflow "
                                "database, or in .scalelab/)")
    study: str = Field(min_length=1, max_length=MAX_NAME_LENGTH * 2, description="study name (a search sweep's study_name)")
    keys: list[str] | None = Field(None, description="which best parameters to take (default: all)")

    _storage = field_validator("storage")(classmethod(lambda cls, v: _study_url(v)))
    _name = field_validator("study")(classmethod(lambda cls, v: _plain_name(v)))


class SearchFile(_Strict):
    metric: str = metrics.FINAL_VAL_LOSS
    mode: Literal["min", "max"] = "min"
    num_samples: int = Field(20, ge=1, le=MAX_SAMPLES, strict=True)
    storage: str | None = None
    study_name: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH * 2)
    sampler_seed: int | None = Field(None, ge=0, le=MAX_SEED, strict=True,
                                     description="seed of Optuna's TPE sampler (reproducible search)")
    space: dict[str, Any] = Field(min_length=1)  # entries checked by search_space.py

    _storage = field_validator("storage")(classmethod(lambda cls, v: _study_url(v)))
    _name = field_validator("study_name")(classmethod(lambda cls, v: _plain_name(v)))

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {brief(value)}; allowed: {', '.join(METRICS)}")
        return value


class SweepFile(_Strict):
    name: str = Field(max_length=MAX_NAME_LENGTH, description="letters, digits, '_', '-', '.' (names the Ray run folder)")
    experiment: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH * 2, description=
                                   "MLflow experiment; made a safe folder name for the trials folder")
    tracking_uri: str | None = Field(None, min_length=1)
    description: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: int | list[int] | None = None
    derived: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesFile = Field(default_factory=ResourcesFile)
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY, strict=True)
    retries: int = Field(1, ge=0, le=MAX_RETRIES, strict=True)
    fuse: int | Literal[FUSE_CHOICES] = Field(
        DEFAULT_FUSE, description="fused packs (orchestrator/packing.py): 'off', 'auto' or at most N trials per pack")
    search: SearchFile | None = None

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        if value is not None and (CONTROL.search(value) or value != value.strip()):
            raise ValueError("an experiment name may not hold control characters (NUL, line breaks, escapes) or "
                             "start or end with spaces; use letters, digits, spaces and punctuation")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        if value is not None and CONTROL_IN_TEXT.search(value):
            raise ValueError("a description may not hold control characters (NUL, escapes); plain text and line "
                             "breaks are fine")
        return value

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str | None) -> str | None:
        problem = tracking_uri_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse(cls, value: Any) -> Any:
        return check_fuse(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            raise ValueError(f"{brief(value)} is not a usable sweep name; use letters, digits, '_', '-' "
                             "and '.' (it names the MLflow experiment and Ray's run folder)")
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"a number of seeds must be between 1 and {MAX_SEEDS}, got {value}")
            return value
        if (isinstance(value, list) and value
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            if len(value) > MAX_SEEDS:
                raise ValueError(f"at most {MAX_SEEDS} seeds, got {len(value)}")
            bad = [v for v in value if not 0 <= v <= MAX_SEED]
            if bad:
                raise ValueError(f"seeds must be integers from 0 to {MAX_SEED}, got {brief(bad[0])}")
            if len(set(value)) != len(value):
                raise ValueError(f"seeds repeat a value: {brief(value)}")
            return value
        raise ValueError(f"expected a number of seeds (3 → 0, 1, 2) or a non-empty list of "
                         f"integer seeds ([0, 1, 2]), got {brief(value)}")


# Allowed keys per mapping, for "did you mean" on unknown keys.
ALLOWED_KEYS: dict[tuple, list[str]] = {
    (): list(SweepFile.model_fields),
    ("resources",): list(ResourcesFile.model_fields),
    ("search",): list(SearchFile.model_fields),
    ("base", "from_study"): list(FromStudyFile.model_fields),
}
