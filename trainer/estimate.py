"""Cost of one config without building a model: parameters, tokens, FLOPs, memory, time.
Used by `scalelab plan` and for GPU fractions; the tests check it against the real model."""
from __future__ import annotations

import os

from .config import HIDDEN_ROLES, TrainConfig
from .parametrization import multiplier_placement

# Dense bf16 peak FLOP/s of common accelerators, for MFU (set `peak_flops` for others).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
# Effective throughput assumed for time estimates (FLOP/s of useful training work per trial).
CPU_FLOPS_PER_THREAD = 4e10  # measured ~4.5-5.5e10 at widths 128-256 on this class of CPU
GPU_FLOPS = PEAK_FLOPS["H100"] * 0.35  # at a typical small-model MFU


def _multiplier_count(kind: str, d_in: int, d_out: int) -> int:
    return {"none": 0, "scalar": 1, "row": d_out, "col": d_in, "vector": d_in + d_out}[kind]


def matrix_groups(cfg: TrainConfig) -> list[tuple[str, int, int, int]]:
    """(role, d_in, d_out, how many) of the model's matrices: one embedding and head, n_layers of
    each hidden role. Every count below is a sum over these few groups, so it costs the same at
    any depth (a config is priced while it is validated, before anything bounds n_layers)."""
    return [("embedding", *cfg.matrix_shape("embedding"), 1),
            *((role, *cfg.matrix_shape(role), cfg.n_layers) for role in HIDDEN_ROLES),
            ("head", *cfg.matrix_shape("head"), 1)]


def matrix_shapes(cfg: TrainConfig) -> list[tuple[str, int, int]]:
    """(role, d_in, d_out) of every matrix, in the model's order: n_layers long, so for checking
    a built model only; costs come from `matrix_groups`."""
    roles = ["embedding", *HIDDEN_ROLES * cfg.n_layers, "head"]
    return [(role, *cfg.matrix_shape(role)) for role in roles]


def flops_per_token(cfg: TrainConfig) -> float:
    """Training FLOPs per token: 6 × matmul parameters (embedding lookups are free) plus the
    attention scores and mixing (Kaplan et al.: 6 · n_layers · seq_len · d_model)."""
    matmul = sum(n * i * o for role, i, o, n in matrix_groups(cfg) if role != "embedding")
    return 6.0 * matmul + 6.0 * cfg.n_layers * cfg.seq_len * cfg.d_model


SIZE_KEYS = ("batch_size", "seq_len", "d_model", "n_layers", "mlp_ratio", "vocab_size")  # what memory grows with


def machine_memory_bytes() -> int | None:
    """Physical RAM of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# What `estimate`'s memory depends on: validation prices every trial of a sweep, and the trials of
# a 100,000-point grid share a few shapes. A field that starts to matter to memory belongs here
# (test_hostile_inputs checks memory_bytes against estimate).
MEMORY_FIELDS = ("d_model", "n_layers", "mlp_ratio", "vocab_size", "batch_size", "seq_len", "multipliers",
                 "multiplier_placement", "multiplier_overrides", "micro_batch_size")


def memory_bytes(cfg: TrainConfig, workers: int = 1) -> float:
    """One worker's memory (see `estimate`)."""
    key = (workers, *(_hashable(getattr(cfg, f)) for f in MEMORY_FIELDS))
    if key not in _MEMORY:
        if len(_MEMORY) > 10_000:
            _MEMORY.clear()
        _MEMORY[key] = estimate(cfg, workers)["memory_bytes"]
    return _MEMORY[key]


def rows_per_pass(cfg: TrainConfig, workers: int = 1) -> int:
    """The most rows one forward/backward pass holds: a worker's share of the batch
    (trainer/distributed.py), cut to micro_batch_size."""
    rows = -(-cfg.batch_size // workers)
    return min(rows, cfg.micro_batch_size) if cfg.micro_batch_size else rows


_MEMORY: dict[tuple, float] = {}


def _hashable(value):
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def memory_problem(cfg: TrainConfig, available_bytes: float | None, device: str, workers: int = 1) -> str | None:
    """None when the estimated training memory (of one of `workers`) fits `available_bytes` of
    `device` (e.g. "GPU memory (resources.gpu_memory_gb)"), else a sentence naming the estimate
    and the fix."""
    need = memory_bytes(cfg, workers)
    if available_bytes is None or need <= available_bytes:
        return None
    # Short: the caller's prefix already names the trial's values (a sweep's grid point).
    return (f"needs about {need / 2 ** 30:,.3g} GiB to train, more than the {available_bytes / 2 ** 30:,.1f} GiB "
            f"of {device}; shrink the model or the batch, or set micro_batch_size")


def estimate(cfg: TrainConfig, workers: int = 1) -> dict[str, float]:
    """Costs of one run; on `workers` data-parallel workers, `memory_bytes` is one worker's
    (every worker holds the whole model and its optimizer, activations of its rows of one pass)
    and the seconds are wall time with the work shared."""
    kinds = multiplier_placement(cfg.multipliers, cfg.multiplier_placement, cfg.multiplier_overrides)
    groups = matrix_groups(cfg)
    weights = sum(n * i * o for _, i, o, n in groups)
    multipliers = sum(n * _multiplier_count(kinds[role], i, o) for role, i, o, n in groups)
    norms = (2 * cfg.n_layers + 1) * cfg.d_model
    n_params = weights + multipliers + norms
    tokens = cfg.steps * cfg.tokens_per_step
    flops = flops_per_token(cfg) * tokens
    # fp32 weights + grads + two Adam moments, activations kept for backward (~24 floats per
    # token and width per layer, plus attention and fp32 logits with their gradient).
    act = rows_per_pass(cfg, workers) * cfg.seq_len * (cfg.n_layers * (24 * cfg.d_model + 2 * cfg.mlp_hidden * 3)
                                 + 3 * cfg.vocab_size)
    memory = 16 * n_params + 4 * act
    return {"n_params": n_params, "n_params_nonembedding": n_params - cfg.vocab_size * cfg.d_model,
            "tokens": tokens, "flops": flops, "memory_bytes": memory,
            "seconds_cpu": flops / (CPU_FLOPS_PER_THREAD * max(1, cfg.threads) * workers),
            "seconds_gpu": flops / (GPU_FLOPS * workers)}
