"""Decoder-only transformer: embedding, pre-RMSNorm blocks (causal attention with rotary
embeddings, SwiGLU MLP), final RMSNorm, untied LM head, no biases.

Every matrix is a layers.Linear/Embedding that can carry learnable multipliers; init std and
forward multipliers come from parametrization.rules_for_config, nothing else here knows the
scheme.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .config import ATTENTION_ROLES, MLP_ROLES, TrainConfig
from .layers import Embedding, Linear, MultipliedMatrix, RMSNorm
from .parametrization import ParamRule, multiplier_placement, rules_for_config


class Rotary(nn.Module):
    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T, hd)
        T = x.shape[-2]
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: TrainConfig, make: "LayerFactory", rotary: Rotary):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (make(role) for role in ATTENTION_ROLES)
        self.logit_scale = make.rules["attn_logits"].forward_mult  # α_attn/d_head (µP) or 1/sqrt(d_head)
        self.rotary = rotary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        split = lambda t: t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        y = F.scaled_dot_product_attention(self.rotary(q), self.rotary(k), v, is_causal=True,
                                           scale=self.logit_scale)
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: TrainConfig, make: "LayerFactory"):
        super().__init__()
        self.up, self.gate, self.down = (make(role) for role in MLP_ROLES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # SwiGLU


class Block(nn.Module):
    def __init__(self, cfg: TrainConfig, make: "LayerFactory", rotary: Rotary):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, frozen=cfg.freeze_norms)
        self.attn = Attention(cfg, make, rotary)
        self.mlp_norm = RMSNorm(cfg.d_model, frozen=cfg.freeze_norms)
        self.mlp = MLP(cfg, make)
        self.residual_mult = make.rules["residual"].forward_mult  # 1/L^α with depth scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_mult * self.attn(self.attn_norm(x))
        return x + self.residual_mult * self.mlp(self.mlp_norm(x))


class LayerFactory:
    """Builds each matrix with its rule's init and forward multiplier and its multiplier kind."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rules: dict[str, ParamRule] = rules_for_config(cfg)
        self.kinds = multiplier_placement(cfg.multipliers, cfg.multiplier_placement, cfg.multiplier_overrides)
        self.mult_at_forward = cfg.multiplier_init == "forward"

    def __call__(self, role: str, cls=Linear) -> MultipliedMatrix:
        d_in, d_out = self.cfg.matrix_shape(role)
        rule, kind = self.rules[role], self.kinds[role]
        fwd, mult_init = rule.forward_mult, 1.0
        if kind != "none" and self.mult_at_forward:
            fwd, mult_init = 1.0, rule.forward_mult  # the learnable multiplier starts at the tuned value
        layer = cls(d_in, d_out, role=role, kind=kind, forward_mult=fwd, mult_init=mult_init)
        with torch.no_grad():
            layer.weight.normal_(0.0, rule.init_std) if rule.init_std > 0 else layer.weight.zero_()
        return layer


class GPT(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        make = LayerFactory(cfg)
        rotary = Rotary(cfg.head_dim, cfg.seq_len)
        self.embedding = make("embedding", cls=Embedding)
        self.blocks = nn.ModuleList(Block(cfg, make, rotary) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, frozen=cfg.freeze_norms)
        self.head = make("head")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                record: dict[str, float] | None = None):
        """Logits (and mean cross-entropy if targets). `record`, when given, is filled with
        mean |activation| of the embedding, each block output and the logits."""
        x = self.embedding(idx)
        if record is not None:
            record["embedding"] = x.detach().abs().mean().item()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if record is not None:
                record[f"block.{i}"] = x.detach().abs().mean().item()
        logits = self.head(self.final_norm(x))
        if record is not None:
            record["logits"] = logits.detach().abs().mean().item()
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    # --- introspection used by the loop and the optimizer ----------------------------------
    def matrices(self) -> dict[str, MultipliedMatrix]:
        """Layer name (`<role>` or `<role>.<block>`) → matrix layer."""
        out: dict[str, MultipliedMatrix] = {"embedding": self.embedding}
        for i, block in enumerate(self.blocks):
            for layer in block.modules():  # attention then MLP: HIDDEN_ROLES order
                if isinstance(layer, MultipliedMatrix):
                    out[f"{layer.role}.{i}"] = layer
        out["head"] = self.head
        return out

    def norms(self) -> dict[str, RMSNorm]:
        out = {}
        for i, block in enumerate(self.blocks):
            out[f"attn_norm.{i}"], out[f"mlp_norm.{i}"] = block.attn_norm, block.mlp_norm
        out["final_norm"] = self.final_norm
        return out

    def folded(self) -> "GPT":
        """A copy with every multiplier folded into its weight (same logits, plain matrices)."""
        twin = copy.deepcopy(self)
        for layer in twin.matrices().values():
            layer.fold()
        return twin

    def count_params(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        return total, total - self.embedding.weight.numel()
