"""Which TrainConfigs can share a fused pack (trainer/fused.py), without importing torch:
`scalelab plan` groups a sweep's trials with these before anything trains."""
from __future__ import annotations

import json

from .config import ConfigError, TrainConfig

# Fields every member of a pack shares: they fix the tensors' shapes and which parameters
# exist (shape, multiplier placement, frozen norms), the data layout (corpus, split, batch),
# the loop (steps, eval cadence) and how the pack runs (device, threads, compile). Every other
# TrainConfig field (MEMBER_FIELDS) is a number the stacked model or optimizer holds per member.
PACK_FIELDS = ("d_model", "n_layers", "head_dim", "mlp_ratio", "vocab_size", "seq_len", "freeze_norms",
               "multipliers", "multiplier_placement", "multiplier_overrides", "optimizer",
               "corpus", "parquet_column", "val_fraction", "batch_size", "cache_dir",
               "steps", "eval_interval", "eval_batches", "device", "compile", "threads", "micro_batch_size")
MEMBER_FIELDS = ("scheme", "multiplier_init", "base_width", "base_depth", "width_recipe", "depth_scaling",
                 "init_std", "emb_init_std", "head_init_std", "alpha_emb", "alpha_out", "alpha_attn",
                 "lr_mult_emb", "lr_mult_hidden", "lr_mult_head", "lr_mult_vector", "lr_mult_multiplier",
                 "multiplier_lr_width_exponent", "wd_mult_emb", "wd_mult_hidden", "wd_mult_head",
                 "wd_mult_vector", "multiplier_wd", "lr", "weight_decay", "wd_mode", "beta1", "beta2", "eps",
                 "muon_momentum", "grad_clip", "schedule", "warmup_steps", "decay_frac", "min_lr_ratio",
                 "seed", "divergence_factor", "peak_flops", "record_activations")


def unfusable_reason(cfg: TrainConfig) -> str | None:
    if cfg.optimizer != "adamw":
        return (f"optimizer={cfg.optimizer} cannot be fused (Muon orthogonalises each matrix on its own); "
                "train it alone with trainer.loop.train")
    if cfg.micro_batch_size:
        return (f"micro_batch_size={cfg.micro_batch_size} cannot be fused (a pack steps every member's whole batch "
                "at once); train it alone with trainer.loop.train, or leave micro_batch_size at 0")
    return None


def pack_key(cfg: TrainConfig) -> tuple:
    """Configs with equal keys can share a pack. ConfigError if `cfg` cannot be fused at all."""
    reason = unfusable_reason(cfg)
    if reason:
        raise ConfigError(reason)
    return tuple((name, json.dumps(getattr(cfg, name), sort_keys=True)) for name in PACK_FIELDS)


def check_pack(cfgs: list[TrainConfig]) -> None:
    """ConfigError naming the field (and the members) that keep these configs from one pack."""
    if not cfgs:
        raise ConfigError("a fused pack needs at least one config")
    for i, cfg in enumerate(cfgs):
        reason = unfusable_reason(cfg)
        if reason:
            raise ConfigError(f"member {i}: {reason}")
    for name in PACK_FIELDS:
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            odd = next(i for i, v in enumerate(values) if v != values[0])
            raise ConfigError(f"cannot fuse: {name} differs between members (member 0: {values[0]!r}, "
                              f"member {odd}: {values[odd]!r}); a pack's members share every field of "
                              "trainer.fused.PACK_FIELDS (shapes, multiplier placement, data, steps, runtime)")


def group_packs(cfgs: list[TrainConfig], max_members: int = 16) -> list[list[int]]:
    """Indices of `cfgs` in packs that train_fused accepts (first-seen order, at most
    `max_members` each). A config that cannot be fused is a pack of its own: run it with
    trainer.loop.train (`unfusable_reason` says why)."""
    packs: dict[object, list[list[int]]] = {}
    out: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if unfusable_reason(cfg):
            out.append([i])
            continue
        chunks = packs.setdefault(pack_key(cfg), [])
        if not chunks or len(chunks[-1]) >= max_members:
            chunks.append([])
            out.append(chunks[-1])
        chunks[-1].append(i)
    return out
