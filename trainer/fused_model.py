"""K GPTs of one shape as one model (horizontal fusion, HFTA-style): every weight is stacked
along a leading member dimension K and every matmul is one batched matmul.

A FusedGPT is built from K ordinary `model.GPT`s, so the init, the forward multipliers and the
multiplier placement stay decided by `parametrization.param_rule` and `model.LayerFactory`;
this module only stacks what they built and runs the same arithmetic on the stack. Each op is
chosen so that member k's numbers equal the single model's on CPU (bmm slice k = F.linear,
SDPA over the merged batch = SDPA per member, one cross-entropy per member).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MultipliedMatrix, row_col_scaled
from .model import GPT, Rotary
from .parametrization import rules_for_config


def _stack(tensors: list[torch.Tensor], requires_grad: bool = True) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]), requires_grad=requires_grad)


class _BatchedLinear(torch.autograd.Function):
    """y = x Wᵀ for each member (bmm). Autograd's bmm backward would return ∂L/∂W transposed
    (as the gradient of the Wᵀ view), and every weight gradient would then cost a transposed
    copy (slow: strided reads) to reach W's layout; here it is formed as Gᵀx in W's own layout,
    as F.linear's backward does for one matrix, with the same products."""

    @staticmethod
    def forward(ctx, x, w):  # x (K, N, d_in), w (K, d_out, d_in)
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        # under autocast the forward's bmm ran in bf16 and g is bf16: the backward products too
        # (autograd casts each gradient back to its input's dtype); no-ops in fp32
        x, w = x.to(g.dtype), w.to(g.dtype)
        grad_x = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


class StackedMatrix(nn.Module):
    """K matrices of one role, shape and multiplier kind: weight (K, d_out, d_in), learnable
    scalar (K,), rows (K, d_out), columns (K, d_in), and each member's fixed forward multiplier."""

    def __init__(self, layers: list[MultipliedMatrix]):
        super().__init__()
        first = layers[0]
        self.role, self.kind = first.role, first.kind
        self.weight = _stack([m.weight for m in layers])
        self.scale = _stack([m.scale for m in layers]) if first.scale is not None else None
        self.row = _stack([m.row for m in layers]) if first.row is not None else None
        self.col = _stack([m.col for m in layers]) if first.col is not None else None
        fwd = torch.tensor([m.forward_mult for m in layers], device=first.weight.device)
        self.register_buffer("forward_mult", fwd if bool((fwd != 1.0).any()) else None, persistent=False)

    def params(self) -> dict[str, nn.Parameter]:
        """Name (as on MultipliedMatrix) → stacked parameter, in the single layer's order."""
        out = {"weight": self.weight}
        out.update((n, p) for n, p in (("scale", self.scale), ("row", self.row), ("col", self.col)) if p is not None)
        return out

    def effective_weight(self) -> torch.Tensor:
        """(K, d_out, d_in); the same products, in the same order, as MultipliedMatrix."""
        w, f = self.weight, self.forward_mult
        if self.scale is not None:
            return w * (self.scale if f is None else self.scale * f)[:, None, None]
        if self.row is not None:  # the fixed factor rides on the smallest tensor it can
            return row_col_scaled(w, self.row if f is None else self.row * f[:, None], self.col)
        if self.col is not None:
            return row_col_scaled(w, None, self.col if f is None else self.col * f[:, None])
        return w if f is None else w * f[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (K, ..., d_in)
        w = self.effective_weight()
        y = _BatchedLinear.apply(x.reshape(x.shape[0], -1, x.shape[-1]), w)
        return y.view(*x.shape[:-1], w.shape[1])


class StackedEmbedding(StackedMatrix):
    """K token embeddings (matrix orientation (K, d, vocab), like layers.Embedding): member k
    looks its tokens up in its own table, offset by k·vocab in the concatenated tables."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx: (K, B, T)
        w = self.effective_weight()
        K, d, vocab = w.shape
        offsets = torch.arange(K, device=idx.device).view(K, *([1] * (idx.dim() - 1))) * vocab
        return F.embedding(idx + offsets, w.transpose(1, 2).reshape(K * vocab, d))


class StackedNorm(nn.Module):
    """K RMSNorms: normalise without weight, then each member's weight (F.rms_norm does the
    same two products, so member k's values equal layers.RMSNorm's)."""

    def __init__(self, norms: list[nn.Module]):
        super().__init__()
        self.eps = norms[0].eps
        self.weight = _stack([n.weight for n in norms], requires_grad=norms[0].weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (K, ..., d)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return F.rms_norm(x, (x.shape[-1],), None, self.eps) * self.weight.view(shape)


def runs(values: list) -> list[tuple[slice, object]]:
    """(slice of members, value) for each run of consecutive members with one value."""
    out: list[tuple[slice, object]] = []
    for k, v in enumerate(values):
        if out and out[-1][1] == v:
            out[-1] = (slice(out[-1][0].start, k + 1), v)
        else:
            out.append((slice(k, k + 1), v))
    return out


def _key(name: str) -> str:
    return name.replace(".", ":")


class FusedGPT(nn.Module):
    """The architecture of model.GPT on K stacked members; activations are (K, B, T, d)."""

    def __init__(self, members: list[GPT]):
        super().__init__()
        cfgs = [m.cfg for m in members]
        cfg = cfgs[0]
        self.K, self.n_layers, self.n_heads, self.head_dim = len(members), cfg.n_layers, cfg.n_heads, cfg.head_dim
        device = members[0].embedding.weight.device
        mats = [m.matrices() for m in members]
        norms = [m.norms() for m in members]
        # Matrices and norms under the single model's layer names (`attn_q.0`, `final_norm`, ...;
        # a module name cannot hold a dot, so `attn_q:0` in the state dict).
        self.mats = nn.ModuleDict({_key(name): (StackedEmbedding if name == "embedding" else StackedMatrix)(
            [mm[name] for mm in mats]) for name in mats[0]})
        self.norms = nn.ModuleDict({_key(name): StackedNorm([nn_[name] for nn_ in norms]) for name in norms[0]})
        self.rotary = Rotary(cfg.head_dim, cfg.seq_len).to(device)
        rules = [rules_for_config(c) for c in cfgs]
        self.logit_scales = [r["attn_logits"].forward_mult for r in rules]
        residual = [r["residual"].forward_mult for r in rules]  # 1/L^α with depth scaling
        if len(set(residual)) == 1:
            self.residual_mult = residual[0]
        else:
            self.register_buffer("residual_mult", torch.tensor(residual, device=device).view(-1, 1, 1, 1),
                                 persistent=False)

    def pairs(self, members: list[GPT]) -> list[tuple[nn.Parameter, list[nn.Parameter]]]:
        """(stacked parameter, the members' parameters it holds), in one fixed order."""
        out = []
        mats = [m.matrices() for m in members]
        for name in mats[0]:
            for pname, p in self.mats[_key(name)].params().items():
                out.append((p, [getattr(mm[name], pname) for mm in mats]))
        norms = [m.norms() for m in members]
        out += [(self.norms[_key(name)].weight, [nn_[name].weight for nn_ in norms]) for name in norms[0]]
        return out

    def attention(self, i: int, x: torch.Tensor) -> torch.Tensor:
        K, B, T, C = x.shape
        split = lambda t: t.view(K * B, T, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = (split(self.mats[f"{r}:{i}"](x)) for r in ("attn_q", "attn_k", "attn_v"))
        q, k = self.rotary(q), self.rotary(k)
        # SDPA takes one float scale: one call per run of members with the same logit scale.
        outs = []
        for members, scale in runs(self.logit_scales):
            s = slice(members.start * B, members.stop * B)
            outs.append(F.scaled_dot_product_attention(q[s], k[s], v[s], is_causal=True, scale=scale))
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return self.mats[f"attn_o:{i}"](y.transpose(1, 2).reshape(K, B, T, C))

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.mats[f"mlp_gate:{i}"](x), self.mats[f"mlp_up:{i}"](x)
        return self.mats[f"mlp_down:{i}"](F.silu(gate) * up)  # SwiGLU

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                record: list[dict[str, float]] | None = None):
        """idx (K, B, T) → logits (K, B, T, vocab) and each member's mean cross-entropy (K,).
        `record`, when given, holds K dicts filled like GPT.forward's."""
        def note(name: str, t: torch.Tensor) -> None:
            if record is not None:
                for k, rec in enumerate(record):
                    if rec is not None:
                        rec[name] = t[k].detach().abs().mean().item()

        x = self.mats["embedding"](idx)
        note("embedding", x)
        for i in range(self.n_layers):
            x = x + self.residual_mult * self.attention(i, self.norms[f"attn_norm:{i}"](x))
            x = x + self.residual_mult * self.mlp(i, self.norms[f"mlp_norm:{i}"](x))
            note(f"block.{i}", x)
        logits = self.mats["head"](self.norms["final_norm"](x))
        note("logits", logits)
        if targets is None:
            return logits, None
        # One cross-entropy per member, as GPT.forward computes it: its mean reduction sums in
        # another order over a (K·N) batch, and a member's (N, vocab) slice stays in cache.
        # unbind, not logits[k]: the backward of K selects would zero and add K full-size grads.
        V = logits.shape[-1]
        losses = torch.stack([F.cross_entropy(lg.float().view(-1, V), t.reshape(-1))
                              for lg, t in zip(logits.unbind(), targets.unbind())])
        return logits, losses
