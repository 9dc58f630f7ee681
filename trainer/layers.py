"""Matrix layers that can carry learnable multipliers (docs/science.md §2), and RMSNorm.

W_eff = f · s · (r ⊙ W ⊙ c): f is the fixed forward multiplier of the parametrization, s a
learnable scalar, r (d_out entries) and c (d_in entries) learnable row and column scales.
The multipliers are applied to the weight, not to the activations: that is d_out·d_in extra
elementwise work per step instead of tokens·d, cheaper whenever a batch holds more tokens
than the layer's width. Row/column multipliers have their docs/science.md §2 gradients written
out (row_col_scaled); a scalar goes through autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("none", "scalar", "row", "col", "vector")


class _RowColScaled(torch.autograd.Function):
    """W_eff = r ⊙ W ⊙ c (r or c may be absent) with the gradients of docs/science.md §2 written
    out. Autograd through two broadcast products keeps r ⊙ W alive for backward and forms four
    d_out × d_in temporaries there; this saves W, r, c only and forms one: H = G ⊙ W, from which
    ∂L/∂r = H c and ∂L/∂c = rᵀ H (vector-matrix products, no further temporary), and then
    ∂L/∂W = G ⊙ c ⊙ r written over H. The forward is the same products, the second in place."""

    @staticmethod
    def forward(ctx, w, row, col):
        ctx.save_for_backward(w, row, col)
        out = w if row is None else torch.mul(w, row.unsqueeze(-1))
        if col is None:
            return out
        return out.mul_(col.unsqueeze(-2)) if row is not None else torch.mul(w, col.unsqueeze(-2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        w, row, col = ctx.saved_tensors
        g = g.contiguous()  # a batched matmul's G arrives transposed; the reductions below then round alike
        h = g * w                                                                # H_ij = G_ij W_ij
        grad_row = grad_col = None
        if row is not None:                                                      # Σ_j W_ij c_j G_ij
            grad_row = h.sum(-1) if col is None else (col.unsqueeze(-2) @ h.transpose(-1, -2)).squeeze(-2)
        if col is not None:                                                      # Σ_i r_i W_ij G_ij
            grad_col = h.sum(-2) if row is None else (row.unsqueeze(-2) @ h).squeeze(-2)
        if col is None:                                                          # r_i c_j G_ij, over H
            grad_w = torch.mul(g, row.unsqueeze(-1), out=h)
        else:
            grad_w = torch.mul(g, col.unsqueeze(-2), out=h)
            if row is not None:
                grad_w.mul_(row.unsqueeze(-1))
        return grad_w, grad_row, grad_col


def row_col_scaled(w: torch.Tensor, row: torch.Tensor | None, col: torch.Tensor | None) -> torch.Tensor:
    """r ⊙ W ⊙ c: W (..., d_out, d_in), rows (..., d_out), columns (..., d_in), leading
    dimensions alike (the fused trainer stacks K members along the first). Its reductions
    round every slice as they round it alone, so a member of a fused pack gets its gradients
    to the last bit."""
    return _RowColScaled.apply(w, row, col)


class MultipliedMatrix(nn.Module):
    """A weight W (d_out × d_in) with optional learnable scalar / row / column multipliers."""

    def __init__(self, d_in: int, d_out: int, role: str, kind: str = "none",
                 forward_mult: float = 1.0, mult_init: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"multiplier kind {kind!r} for {role}: use one of {KINDS}")
        self.role, self.kind, self.forward_mult = role, kind, float(forward_mult)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        # A learnable multiplier initialised at the forward-multiplier value takes over f.
        self.scale = nn.Parameter(torch.tensor(float(mult_init))) if kind == "scalar" else None
        self.row = nn.Parameter(torch.full((d_out,), float(mult_init))) if kind in ("row", "vector") else None
        col_init = mult_init if kind == "col" else 1.0  # vector: the rows carry the init value
        self.col = nn.Parameter(torch.full((d_in,), float(col_init))) if kind in ("col", "vector") else None

    def multiplier_params(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in (("scalar", self.scale), ("row", self.row), ("col", self.col))
                if p is not None}

    def effective_weight(self) -> torch.Tensor:
        w, f = self.weight, self.forward_mult
        if self.scale is not None:
            return w * (self.scale * f)
        if self.row is not None:  # the fixed factor rides on the smallest tensor it can
            return row_col_scaled(w, self.row if f == 1.0 else self.row * f, self.col)
        if self.col is not None:
            return row_col_scaled(w, None, self.col if f == 1.0 else self.col * f)
        return w if f == 1.0 else w * f

    @torch.no_grad()
    def fold(self) -> None:
        """Fold multipliers and the forward multiplier into W (inference: no extra cost)."""
        self.weight.copy_(self.effective_weight())
        self.scale = self.row = self.col = None
        self.kind, self.forward_mult = "none", 1.0


class Linear(MultipliedMatrix):
    """y = x W_effᵀ (no bias)."""

    def __init__(self, d_in: int, d_out: int, role: str, **kw):
        super().__init__(d_in, d_out, role, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight())


class Embedding(MultipliedMatrix):
    """Token embedding as the matrix vocab → d: rows r are the d output features, columns c
    are the vocab entries. Stored transposed-free as (vocab, d) for the lookup."""

    def __init__(self, vocab: int, d: int, role: str = "embedding", **kw):
        super().__init__(vocab, d, role, **kw)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # weight is (d, vocab) in matrix orientation; the lookup wants (vocab, d).
        return F.embedding(idx, self.effective_weight().t())


class RMSNorm(nn.Module):
    def __init__(self, d: int, frozen: bool = False, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d), requires_grad=not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
