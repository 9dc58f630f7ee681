"""Inputs built to hurt: depths that would take minutes or all memory to enumerate, integers too
long to print, YAML tags that crash PyYAML's constructors. Each gives a number fast or one clean
line, never a traceback."""
from __future__ import annotations

import itertools
import time

import pytest

from trainer.config import HIDDEN_ROLES, TrainConfig
from trainer.estimate import _multiplier_count, estimate, flops_per_token
from trainer.parametrization import multiplier_placement


# --- estimate: closed form in depth ------------------------------------------------------------

def enumerated(cfg: TrainConfig) -> dict:
    """The counts by walking every matrix of the model one by one (as estimate once did)."""
    kinds = multiplier_placement(cfg.multipliers, cfg.multiplier_placement, cfg.multiplier_overrides)
    shapes = [(role, *cfg.matrix_shape(role)) for role in ["embedding", *HIDDEN_ROLES * cfg.n_layers, "head"]]
    matmul = sum(i * o for role, i, o in shapes if role != "embedding")
    return {"weights": sum(i * o for _, i, o in shapes),
            "multipliers": sum(_multiplier_count(kinds[role], i, o) for role, i, o in shapes),
            "flops_per_token": 6.0 * matmul + 6.0 * cfg.n_layers * cfg.seq_len * cfg.d_model}


@pytest.mark.parametrize("d_model,n_layers,mlp_ratio,vocab", itertools.product([8, 96], [1, 3, 12], [1.0, 8 / 3],
                                                                             [2, 50257]))
@pytest.mark.parametrize("multipliers,placement,overrides", [
    ("none", "paper", {}), ("scalar", "minimal", {}), ("vector", "paper", {}), ("row", "minimal", {}),
    ("col", "paper", {"head": "scalar", "attn_k": "none", "mlp_down": "vector"})])
def test_estimate_equals_a_walk_over_every_matrix(d_model, n_layers, mlp_ratio, vocab, multipliers, placement,
                                                   overrides):
    cfg = TrainConfig(d_model=d_model, head_dim=4, n_layers=n_layers, mlp_ratio=mlp_ratio, vocab_size=vocab,
                      multipliers=multipliers, multiplier_placement=placement, multiplier_overrides=overrides)
    walk, got = enumerated(cfg), estimate(cfg)
    norms = (2 * n_layers + 1) * d_model
    assert got["n_params"] == walk["weights"] + walk["multipliers"] + norms
    assert flops_per_token(cfg) == walk["flops_per_token"]
    assert got["flops"] == walk["flops_per_token"] * cfg.steps * cfg.tokens_per_step


@pytest.mark.parametrize("n_layers", [100_000, 1_000_000_000, 2 ** 40])
def test_estimate_costs_the_same_at_any_depth(n_layers):
    cfg = TrainConfig(d_model=1_048_576, head_dim=64, n_layers=n_layers)
    start = time.perf_counter()
    got = estimate(cfg)
    assert time.perf_counter() - start < 1.0  # a walk over 10^9 layers takes minutes or all memory
    assert got["n_params"] > n_layers * 12 * 1_048_576 ** 2 and got["memory_bytes"] > 16 * got["n_params"]
