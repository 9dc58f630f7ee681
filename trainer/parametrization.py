"""Parametrizations: one pure function from (role, width mult, depth mult, scheme, tunables)
to (init std, LR multiplier, WD multiplier, forward multiplier).

Every rule names the row of docs/science.md §4 (Tensor Programs V, Table 8 for Adam; Table 1 of
the learnable-multipliers paper for the three width recipes) that it implements, so the code
can be checked line by line against the table. Nothing here touches torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass

from .config import HIDDEN_ROLES, MATRIX_ROLES, TrainConfig

# Roles that are not matrices: RMSNorm weights, learnable multipliers, the attention-logit
# scale and the residual-branch scale (forward multipliers only).
OTHER_ROLES = ("norm", "multiplier", "attn_logits", "residual")
ALL_ROLES = MATRIX_ROLES + OTHER_ROLES


@dataclass(frozen=True)
class ParamRule:
    init_std: float      # std of the normal init (norms and multipliers: the constant init value)
    lr_mult: float       # × the base LR
    wd_mult: float       # × the base WD (`weight_decay`; for role 'multiplier': × `multiplier_wd`)
    forward_mult: float  # fixed factor in the forward pass


# The knobs of TrainConfig the rules read (µP's tunable multipliers and base shapes).
TUNABLE_FIELDS = ("width_recipe", "depth_scaling", "head_dim", "base_width",
                  "init_std", "emb_init_std", "head_init_std", "alpha_emb", "alpha_out", "alpha_attn",
                  "lr_mult_emb", "lr_mult_hidden", "lr_mult_head", "lr_mult_vector", "lr_mult_multiplier",
                  "multiplier_lr_width_exponent", "wd_mult_emb", "wd_mult_hidden", "wd_mult_head", "wd_mult_vector")


def _from_config(cls, cfg: TrainConfig) -> "Tunables":
    return cls(**{name: getattr(cfg, name) for name in TUNABLE_FIELDS})


_FIELDS = TrainConfig.model_fields
Tunables = make_dataclass(
    "Tunables", [(name, _FIELDS[name].annotation, field(default=_FIELDS[name].default)) for name in TUNABLE_FIELDS],
    frozen=True, namespace={"__module__": __name__, "from_config": classmethod(_from_config),
                            "__doc__": "TUNABLE_FIELDS with TrainConfig's types and defaults (one source of both)."})


DEPTH_ALPHA = {"completep": 1.0, "depth_mup": 0.5}


def param_rule(role: str, width_mult: float, depth_mult: float, scheme: str,
               tun: Tunables, fan_in: int) -> ParamRule:
    """The rule for one parameter role. `fan_in` is the matrix's input size (d_model, or the
    MLP hidden size for mlp_down); width_mult m = d_model / base_width."""
    if role not in ALL_ROLES:
        raise ValueError(f"unknown parameter role {role!r}; roles are {list(ALL_ROLES)}")
    if scheme not in ("sp", "mup"):
        raise ValueError(f"unknown scheme {scheme!r}; use 'sp' or 'mup'")
    m = width_mult
    mup = scheme == "mup"
    # Depth scaling (CompleteP α=1, depth-µP α=0.5): residual branches × L^-α, hidden Adam LR
    # × L^(α-1), hidden WD × L^(1-α) so that η·λ stays fixed under decoupled WD.
    alpha_depth = DEPTH_ALPHA.get(tun.depth_scaling)
    depth_lr = depth_mult ** (alpha_depth - 1) if alpha_depth is not None else 1.0
    depth_wd = depth_mult ** (1 - alpha_depth) if alpha_depth is not None else 1.0

    if role == "embedding":
        # Table 8, embedding row: init const, Adam LR const, forward × α_emb (SP: × 1).
        return ParamRule(tun.emb_init_std, tun.lr_mult_emb, tun.wd_mult_emb,
                         tun.alpha_emb if mup else 1.0)

    if role in HIDDEN_ROLES:
        std = tun.init_std / math.sqrt(fan_in)          # Table 8, hidden row: σ / sqrt(fan_in)
        lr, wd, fwd = tun.lr_mult_hidden, tun.wd_mult_hidden, 1.0
        if mup and tun.width_recipe == "lr":
            lr /= m                                       # Table 1 "LR only" (classic µP): η ∝ 1/m
        elif mup and tun.width_recipe == "lr_wd":
            lr /= m                                       # Table 1 "through LR and WD": η ∝ 1/m,
            wd *= m                                       #   λ ∝ m (η·λ fixed per group)
        elif mup and tun.width_recipe == "multiplier":
            fwd = 1.0 / m                                 # Table 1 "through the multiplier": s ∝ 1/m,
            std *= m                                      #   η, λ const; W stored /s so W_eff init = µP's
        return ParamRule(std, lr * depth_lr, wd * depth_wd, fwd)

    if role == "head":
        if mup:
            # Table 8, output row: init const (σ_head / sqrt(d_base), or 0), Adam LR const,
            # logits × α_out / m.
            return ParamRule(tun.head_init_std / math.sqrt(tun.base_width), tun.lr_mult_head,
                             tun.wd_mult_head, tun.alpha_out / m)
        return ParamRule(tun.head_init_std / math.sqrt(fan_in), tun.lr_mult_head, tun.wd_mult_head, 1.0)

    if role == "norm":
        # Table 8, vector row (norm weights): init 1, LR const, forward 1.
        return ParamRule(1.0, tun.lr_mult_vector, tun.wd_mult_vector, 1.0)

    if role == "multiplier":
        # docs/science.md §2: AdamW with their own LR and a small WD (multiplier_wd, 2e-3); the
        # LR's width exponent is the paper's open question (0 = width-independent).
        return ParamRule(1.0, tun.lr_mult_multiplier * m ** tun.multiplier_lr_width_exponent, 1.0, 1.0)

    if role == "attn_logits":
        # Table 8, attention logits: q·k × α_attn / d_head under µP; SP: 1 / sqrt(d_head).
        fwd = tun.alpha_attn / tun.head_dim if mup else 1.0 / math.sqrt(tun.head_dim)
        return ParamRule(0.0, 1.0, 1.0, fwd)

    # role == "residual": branch output × L^-α (CompleteP / depth-µP), 1 without depth scaling.
    return ParamRule(0.0, 1.0, 1.0, depth_mult ** -alpha_depth if alpha_depth is not None else 1.0)


def rules_for_config(cfg: TrainConfig) -> dict[str, ParamRule]:
    """Every role's rule for one config (fan-in from the model shape)."""
    tun = Tunables.from_config(cfg)
    fan_in = {role: cfg.matrix_shape(role)[0] if role in MATRIX_ROLES else cfg.d_model for role in ALL_ROLES}
    return {role: param_rule(role, cfg.width_mult, cfg.depth_mult, cfg.scheme, tun, fan_in[role])
            for role in ALL_ROLES}


# --- where learnable multipliers go (docs/science.md §2-3) ----------------------------------
# Paper placement: every matrix, embedding rows+cols, LM head none (the final norm weight is
# already its column multiplier; per-logit rows hurt).
# Minimal symmetry-free placement of §3: row on q, none on k/v, row+col on o; row on gate,
# none on up, row+col on down.
_MINIMAL = {"embedding": "vector", "attn_q": "row", "attn_k": "none", "attn_v": "none",
            "attn_o": "vector", "mlp_gate": "row", "mlp_up": "none", "mlp_down": "vector",
            "head": "none"}


def multiplier_placement(kind: str, placement: str = "paper",
                         overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Role → multiplier kind ('none', 'scalar', 'row', 'col', 'vector')."""
    if kind == "none":
        out = {role: "none" for role in MATRIX_ROLES}
    elif placement == "paper":
        out = {role: ("none" if role == "head" else kind) for role in MATRIX_ROLES}
    elif placement == "minimal":
        # a scalar run puts a scalar wherever the minimal placement puts anything
        out = {role: ("scalar" if kind == "scalar" and k != "none" else k) for role, k in _MINIMAL.items()}
    else:
        raise ValueError(f"unknown multiplier placement {placement!r}; use 'paper' or 'minimal'")
    out.update(overrides or {})
    return out
