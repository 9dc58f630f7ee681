"""Step time of the same model without multipliers, with scalar and with vector multipliers,
at a few widths, and the trainer's throughput against a plain, minimal PyTorch loop of the
same architecture written here. Variants are interleaved round by round so machine noise
hits them alike; each ratio is taken within a round (adjacent timings share the machine's
state) and the median ratio is reported with its interquartile range, so the noise shows.

    python benchmarks/bench_multipliers.py [--widths 128,256,512] [--rounds 5] [--steps 8]

Targets: vector multipliers cost <= 5% of step time at widths >= 256; the trainer is at most
5% slower than the plain loop.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrainConfig
from trainer.data import Batches, load_tokens
from trainer.loop import Trainer, train

SHAPE = dict(n_layers=2, head_dim=32, seq_len=128, batch_size=16, warmup_steps=0, scheme="mup", base_width=128)


# --- a plain GPT of the same architecture, nothing scalelab-specific -------------------------
class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int, seq_len: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.up, self.gate, self.down = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)
        hd = d // heads
        ang = torch.outer(torch.arange(seq_len).float(), 10000.0 ** (-torch.arange(0, hd, 2).float() / hd))
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def rope(self, x):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * self.cos - x2 * self.sin, x1 * self.sin + x2 * self.cos), -1).flatten(-2)

    def forward(self, x):
        B, T, C = x.shape
        h = self.n1(x)
        q, k, v = (l(h).view(B, T, self.heads, -1).transpose(1, 2) for l in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class PlainGPT(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(PlainBlock(cfg.d_model, cfg.n_heads, cfg.mlp_hidden, cfg.seq_len)
                                    for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def plain_loop(cfg: TrainConfig, batches: Batches) -> float:
    tic = time.perf_counter()  # from model construction on, like train()
    torch.manual_seed(0)
    model = PlainGPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    for step in range(cfg.steps):
        x, y = batches.train(step)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return time.perf_counter() - tic


def paired_ratio(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a_i / b_i, with the interquartile range."""
    ratios = sorted(x / y for x, y in zip(a, b))
    q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return f"{med:.3f} [{q1:.3f}, {q3:.3f}]"


def time_steps(trainer: Trainer, steps: int) -> float:
    tic = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - tic) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="128,256,512")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--batch-size", type=int, default=SHAPE["batch_size"],
                    help="sequences per step; the multipliers' weight-side work is per step, so its share "
                         "falls as 1/tokens-per-step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    SHAPE["batch_size"] = args.batch_size
    tokens = load_tokens(TrainConfig())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shape {SHAPE}")

    print("\n## Learnable multipliers: step time relative to no multipliers (median of rounds)")
    print(f"{'width':>6} {'none ms':>9} {'scalar ms':>10} {'vector ms':>10} {'scalar/none [IQR]':>22} {'vector/none [IQR]':>22}")
    for width in widths:
        trainers = {}
        for kind in ("none", "scalar", "vector"):
            cfg = TrainConfig(**SHAPE, d_model=width, multipliers=kind, steps=10_000)
            trainers[kind] = Trainer(cfg, Batches(cfg, tokens))
            time_steps(trainers[kind], 2)  # warm-up
        times = {k: [] for k in trainers}
        for _ in range(args.rounds):
            for kind, t in trainers.items():
                times[kind].append(time_steps(t, args.steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = {k: paired_ratio(times[k], times["none"]) for k in ("scalar", "vector")}
        print(f"{width:>6} {med['none'] * 1e3:>9.1f} {med['scalar'] * 1e3:>10.1f} {med['vector'] * 1e3:>10.1f} "
              f"{ratio['scalar']:>22s} {ratio['vector']:>22s}")

    print("\n## Trainer (train(): schedule, clipping, divergence check, stats at eval) vs a plain PyTorch loop")
    print(f"{'width':>6} {'plain s':>9} {'trainer s':>10} {'trainer/plain [IQR]':>22}")
    for width in widths:
        cfg = TrainConfig(**SHAPE, d_model=width, steps=args.steps * 3, eval_interval=args.steps * 3, eval_batches=1,
                          record_activations=True)
        batches = Batches(cfg, tokens)
        plain_loop(cfg.model_copy(update={"steps": 2}), batches)  # warm-up
        plain, ours = [], []
        for _ in range(args.rounds):
            plain.append(plain_loop(cfg, batches))
            tic = time.perf_counter()
            train(cfg)
            ours.append(time.perf_counter() - tic)
        p, o = statistics.median(plain), statistics.median(ours)
        print(f"{width:>6} {p:>9.2f} {o:>10.2f} {paired_ratio(ours, plain):>22s}")


if __name__ == "__main__":
    main()
