"""Step time of the same model without multipliers, with scalar and with vector multipliers,
at a few widths, for one model and for a fused pack (trainer/fused.py), and the trainer's
throughput against a plain, minimal PyTorch loop of the same architecture written here.
"vector (autograd)" is the previous implementation of row/column multipliers (autograd through
two broadcast products), swapped in for its turn, so old and new are measured in one run.
Variants are interleaved round by round so machine noise hits them alike; each ratio is taken
within a round (adjacent timings share the machine's state) and the median ratio is reported
with its interquartile range [q1, q3], so the noise shows, and a 95% bootstrap interval of the
median (lo-hi). On a shared machine many rounds of single steps (--steps 1 --rounds 60) pin the
median down far better than a few rounds of many steps.

    python benchmarks/bench_multipliers.py [--widths 128,256,512] [--rounds 5] [--steps 8] [--pack 4]

Targets: vector multipliers cost <= 2% of step time at widths >= 256; the trainer is at most
5% slower than the plain loop.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer import fused_model, layers
from trainer.config import TrainConfig
from trainer.data import Batches, load_tokens
from trainer.fused import FusedTrainer
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


def autograd_row_col_scaled(w, row, col):
    """The previous r ⊙ W ⊙ c: autograd through two broadcast products (same forward values)."""
    out = w if row is None else w * row.unsqueeze(-1)
    return out if col is None else out * col.unsqueeze(-2)


@contextlib.contextmanager
def row_col_impl(fn):
    saved = layers.row_col_scaled, fused_model.row_col_scaled
    if fn is not None:
        layers.row_col_scaled = fused_model.row_col_scaled = fn
    try:
        yield
    finally:
        layers.row_col_scaled, fused_model.row_col_scaled = saved


# variant -> (multipliers, implementation of row/column multipliers; None = the trainer's own)
VARIANTS = {"none": ("none", None), "scalar": ("scalar", None), "vector": ("vector", None),
            "vector (autograd)": ("vector", autograd_row_col_scaled)}


def paired_ratio(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a_i / b_i, with the interquartile range and a 95%
    bootstrap interval of the median (how well the rounds pin it down)."""
    ratios = np.array([x / y for x, y in zip(a, b)])
    q1, med, q3 = np.quantile(ratios, [0.25, 0.5, 0.75])
    boot = np.median(np.random.default_rng(0).choice(ratios, (2000, len(ratios))), axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return f"{med:.3f} [{q1:.3f}, {q3:.3f}] ({lo:.3f}-{hi:.3f})"


CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time this process used


def time_steps(trainer: Trainer | FusedTrainer, steps: int) -> float:
    tic = CLOCK()
    for _ in range(steps):
        trainer.train_step()
    return (CLOCK() - tic) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="128,256,512")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--pack", type=int, default=4, help="members of the fused pack measured too (0 = none)")
    ap.add_argument("--no-plain", action="store_true", help="skip the trainer-vs-plain-loop table")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU time of this process (with --threads 1, robust to other work on a shared machine)")
    ap.add_argument("--batch-size", type=int, default=SHAPE["batch_size"],
                    help="sequences per step; the multipliers' weight-side work is per step, so its share "
                         "falls as 1/tokens-per-step")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    SHAPE["batch_size"] = args.batch_size
    tokens = load_tokens(TrainConfig())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; shape {SHAPE}")

    print("\n## r ⊙ W ⊙ c alone: forward + backward of one matrix of the model (median µs; W alone: the floor)")
    print(f"{'d_out x d_in':>14} {'W alone':>9} {'Function':>9} {'autograd':>9} {'autograd/Function':>18}")
    for d_out, d_in in sorted({(w, w) for w in widths} | {(4 * w, w) for w in widths}):
        w = torch.randn(d_out, d_in, requires_grad=True)
        r, c = torch.rand(d_out, requires_grad=True), torch.rand(d_in, requires_grad=True)
        g = torch.randn(d_out, d_in)

        def once(fn, reps=10):
            tic = CLOCK()
            for _ in range(reps):
                fn(w, r, c).backward(g)
                w.grad = r.grad = c.grad = None
            return (CLOCK() - tic) / reps

        fns = {"W alone": lambda w, r, c: w * 1.0, "Function": layers.row_col_scaled,
               "autograd": autograd_row_col_scaled}
        t = {k: [] for k in fns}
        for i in range(args.rounds * 3):
            for k, fn in (list(fns.items()) if i % 2 == 0 else list(fns.items())[::-1]):
                t[k].append(once(fn))
        med = {k: statistics.median(v) * 1e6 for k, v in t.items()}
        print(f"{f'{d_out} x {d_in}':>14} {med['W alone']:>9.0f} {med['Function']:>9.0f} {med['autograd']:>9.0f} "
              f"{paired_ratio(t['autograd'], t['Function']):>18s}")

    for title, pack in (("one model", 0), (f"fused pack of {args.pack} members", args.pack)):
        if title != "one model" and not args.pack:
            continue
        print(f"\n## Learnable multipliers, {title}: step time relative to no multipliers (median of rounds)")
        print(f"{'width':>6} " + " ".join(f"{v + ' ms':>20}" for v in VARIANTS) + " "
              + " ".join(f"{v + '/none [IQR] (CI)':>44}" for v in list(VARIANTS)[1:]))
        for width in widths:
            trainers = {}
            for name, (kind, impl) in VARIANTS.items():
                cfgs = [TrainConfig(**SHAPE, d_model=width, multipliers=kind, steps=10_000, seed=k, lr=1e-3 * (k + 1))
                        for k in range(max(1, pack))]
                trainers[name] = FusedTrainer(cfgs, tokens) if pack else Trainer(cfgs[0], Batches(cfgs[0], tokens))
                with row_col_impl(impl):
                    time_steps(trainers[name], 2)  # warm-up
            times = {k: [] for k in trainers}
            for r in range(args.rounds):
                for name, t in (list(trainers.items()) if r % 2 == 0 else list(trainers.items())[::-1]):
                    with row_col_impl(VARIANTS[name][1]):
                        times[name].append(time_steps(t, args.steps))
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{width:>6} " + " ".join(f"{med[v] * 1e3:>20.1f}" for v in VARIANTS) + " "
                  + " ".join(f"{paired_ratio(times[v], times['none']):>44s}" for v in list(VARIANTS)[1:]))

    if args.no_plain:
        return
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
