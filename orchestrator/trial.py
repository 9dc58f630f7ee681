"""One trial: its identity (the hash of its config, under IDENTITY_VERSION), its label, the
payload that carries it through Ray Tune, its GPU share under `gpu: auto` and its cost. A leaf
of the orchestrator: the sweep file (spec.py), packing, the trainable and the MLflow writes
all take the trial from here."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from trainer.config import TrainConfig
from trainer.estimate import estimate

# Keys of what travels through Tune: a grid sweep's config is {GRID_TRIAL_KEY: Trial.to_payload()}
# (a fused pack's payload lists its members under PACK_MEMBERS_KEY); each report carries the
# searcher's value under OBJECTIVE_KEY and the trial's journal entry under REPORT_KEY.
GRID_TRIAL_KEY = "scalelab_trial"
PACK_MEMBERS_KEY = "members"
OBJECTIVE_KEY = "objective"
REPORT_KEY = "scalelab"

# Bump when the rule below changes; recorded on every trial run (`scalelab migrate` re-keys
# runs recorded under an older rule).
IDENTITY_VERSION = 2

# resources.placement: how a data-parallel trial's workers are laid over the nodes, as the sweep
# file spells it -> Ray's placement group strategy (Ray Train's ScalingConfig.placement_strategy).
PLACEMENTS = {"pack": "PACK",                    # on as few nodes as fit them (Ray Train's default)
              "spread": "SPREAD",                # over as many nodes as have room
              "strict_pack": "STRICT_PACK",      # all on one node, or wait
              "strict_spread": "STRICT_SPREAD"}  # each on a node of its own, or wait
DEFAULT_PLACEMENT = "pack"

GPU_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
MAX_SHORT = 60  # characters of one value in a label or a point's text
# Short names in trial labels ("mup+vector d=256 lr=3e-3 s=0").
LABEL_NAMES = {"d_model": "d", "n_layers": "L", "seed": "s", "weight_decay": "wd",
               "batch_size": "bs", "optimizer": "opt", "steps": "steps"}


@dataclass(frozen=True)
class Trial:
    hash: str                  # trial_hash(config): the trial's identity
    config: TrainConfig        # fully resolved (base + axes + seed + derived)
    overrides: dict[str, Any]  # the values that vary across the sweep (axes / sampled values, seed)
    resources: dict[str, Any]  # {"cpu": float, "gpu": float} per worker; "workers" when more than one,
    # with "placement" when the sweep sets it
    label: str                 # e.g. "mup+vector d=256 lr=3e-3 s=0"

    def to_payload(self) -> dict[str, Any]:
        """Plain data (JSON types) for Tune's config; `from_payload` gives the trial back."""
        return {"hash": self.hash, "label": self.label, "resources": dict(self.resources),
                "overrides": dict(self.overrides), "config": self.config.model_dump()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Trial":
        config = TrainConfig.build(payload["config"], source=f"trial {payload['hash']}")
        return cls(hash=payload["hash"], config=config, overrides=dict(payload["overrides"]),
                   resources=dict(payload["resources"]), label=payload["label"])


def trial_hash(cfg: TrainConfig) -> str:
    """sha256 of the canonical JSON (sorted keys) of `cfg.identity()` (experiment fields away
    from their defaults), first 16 hex chars."""
    text = json.dumps(cfg.identity(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def legacy_trial_hash(config: dict) -> str:
    """Identity version 1: the hash of every field of the config as it was recorded."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parametrization_label(cfg: TrainConfig) -> str:
    """`sp`, `mup`, `mup+vector`, ... (CONTRACTS.md, Labels)."""
    return cfg.scheme + ("" if cfg.multipliers == "none" else f"+{cfg.multipliers}")


def workers_of(resources: dict) -> int:
    """How many data-parallel workers (Ray Train, DDP) train the trial: resources.workers of
    the sweep file. Not part of the trial's identity: N workers train the same curve as one."""
    return int(resources.get("workers", 1))


def placement_strategy(resources: dict) -> str:
    """Ray's placement strategy for the trial's workers (resources.placement; PLACEMENTS). Like
    `workers`, not part of the trial's identity: where the ranks run does not change the curve."""
    return PLACEMENTS[resources.get("placement", DEFAULT_PLACEMENT)]


def gpu_fraction(memory_bytes: float, gpu_memory_gb: float) -> float:
    """`gpu: auto`: the smallest GPU_FRACTIONS share that holds `memory_bytes`; whole GPUs are
    capped at 1 (the trainer uses one device)."""
    need = memory_bytes / (gpu_memory_gb * 2 ** 30)
    return next((f for f in GPU_FRACTIONS if need <= f), 1.0)


def short_value(value: Any) -> str:
    """Compact numbers for labels: 0.003 -> 3e-3, 256 -> 256, 0.5 -> 0.5."""
    if isinstance(value, (int, float, str)):  # a sweep labels 100,000 trials with a few hundred values
        return _short_scalar(type(value), value)
    return _short(value)


@lru_cache(maxsize=4096)
def _short_scalar(_kind: type, value: Any) -> str:  # the type is in the key: 1 and 1.0 and True differ
    return _short(value)


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= MAX_SHORT else text[:MAX_SHORT - 3] + "..."


def trial_label(cfg: TrainConfig, overrides: dict[str, Any], varying: list[str]) -> str:
    """e.g. "mup+vector d=256 lr=3e-3 s=0": the parametrization, then each varying value."""
    parts = [parametrization_label(cfg)]
    for key in varying:
        if key in ("scheme", "multipliers") or key not in overrides:
            continue
        parts.append(f"{LABEL_NAMES.get(key, key)}={short_value(overrides[key])}")
    return " ".join(parts)


def trial_cost(trial) -> dict[str, Any]:
    """`trainer.estimate` of the trial's config on its workers (memory_bytes: one worker's),
    plus `seconds`: its wall time on the devices the trial asks for (GPU when resources.gpu > 0,
    else CPU)."""
    est = estimate(trial.config, workers_of(trial.resources))
    return {**est, "seconds": est["seconds_gpu"] if trial.resources.get("gpu") else est["seconds_cpu"]}
