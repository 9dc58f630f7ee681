"""train(config) -> TrainResult: the one entry point. Reports go through a plain callback so
the orchestrator can forward them to Ray without the trainer importing Ray or MLflow."""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, UserError
from .cpu_memory import keep_freed_memory
from .data import Batches
from .estimate import PEAK_FLOPS, flops_per_token
from .model import GPT
from .optim import Optimizers, lr_factor
from .stats import layer_stats, multiplier_table

Report = Callable[[dict, "str | None"], None]


@dataclass
class TrainResult:
    status: str                       # "finished" | "diverged"
    metrics: dict                     # the final report
    multipliers: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no GPU "
                        f"(torch {torch.__version__}); use device: auto or cpu, or install a CUDA build of torch")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def start_runtime(cfg: TrainConfig) -> torch.device:
    """The device a trainer runs on, with torch's threads and (on CPU) the allocator set up."""
    device = pick_device(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        keep_freed_memory()
    return device


def peak_flops(cfg: TrainConfig, device: torch.device) -> float | None:
    if cfg.peak_flops:
        return cfg.peak_flops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return None


class Trainer:
    def __init__(self, cfg: TrainConfig, batches: Batches | None = None):
        self.cfg = cfg
        self.device = start_runtime(cfg)
        self.batches = batches or Batches(cfg)
        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg).to(self.device)
        self.opt = Optimizers(self.model, cfg)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.flops_per_token = flops_per_token(cfg)
        self.peak = peak_flops(cfg, self.device)
        self.step = 0
        self.initial_loss: float | None = None
        self.history: list[dict] = []
        self.elapsed = 0.0  # wall time of earlier segments of a resumed run

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> tuple[float, float, float]:
        x, y = (t.to(self.device, non_blocking=True) for t in self.batches.train(self.step))
        self.opt.set_lr(lr_factor(self.step, self.cfg))
        with self.autocast():
            _, loss = self.forward(x, y)
        loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.opt.clipped_params(), clip)
        mult = self.opt.multiplier_params()
        mult_norm = torch.nn.utils.get_total_norm([p.grad for p in mult if p.grad is not None]) if mult else None
        self.opt.step()
        self.opt.zero_grad()
        self.step += 1
        return loss.item(), grad_norm.item(), (mult_norm.item() if mult_norm is not None else 0.0)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        record: dict[str, float] = {}
        losses = []
        for i in range(self.cfg.eval_batches):
            x, y = (t.to(self.device) for t in self.batches.val(i))
            with self.autocast():
                _, loss = self.model(x, y, record=record if i == 0 and self.cfg.record_activations else None)
            losses.append(loss.item())
        return sum(losses) / len(losses), record

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly (RNG states included)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
            "initial_loss": self.initial_loss, "history": self.history, "elapsed": self.elapsed,
            "config": self.cfg.model_dump(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.initial_loss = state["step"], state["initial_loss"]
        self.history, self.elapsed = state["history"], state["elapsed"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def train(cfg: TrainConfig, report: Report | None = None, checkpoint_dir: str | None = None,
          resume_from: str | None = None, progress: bool = False) -> TrainResult:
    """Train one model. `report(metrics, checkpoint_path)` is called at every eval point; the
    last report carries `final: True` and the final metrics (see docs/CONTRACTS.md)."""
    t = Trainer(cfg)
    if resume_from == "latest":
        resume_from = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    if resume_from:
        t.load_state_dict(load_checkpoint(resume_from, cfg))
    cfg = t.cfg
    segment_start = time.perf_counter()
    interval_losses: list[float] = []
    interval_time, grad_norm, mult_norm = 0.0, 0.0, 0.0
    status, diverged_at = "finished", None

    while t.step < cfg.steps:
        tic = time.perf_counter()
        loss, grad_norm, mult_norm = t.train_step()
        interval_time += time.perf_counter() - tic
        interval_losses.append(loss)
        if t.initial_loss is None:
            t.initial_loss = loss
        if not math.isfinite(loss) or loss > cfg.divergence_factor * t.initial_loss:
            status, diverged_at = "diverged", t.step
        if status == "diverged" or t.step % cfg.eval_interval == 0 or t.step == cfg.steps:
            metrics = report_metrics(t, interval_losses, interval_time, grad_norm, mult_norm,
                                     t.elapsed + time.perf_counter() - segment_start,
                                     None if status == "diverged" else t.evaluate)
            last = status == "diverged" or t.step == cfg.steps
            if last:
                metrics.update(final_metrics(t, metrics, status, diverged_at))
            t.history.append(metrics)
            path = None
            if checkpoint_dir and status != "diverged":
                t.elapsed = metrics["elapsed_s"]
                segment_start = time.perf_counter()
                path = save_checkpoint(checkpoint_dir, t.step, t.state_dict())
            if progress:
                _print_progress(metrics, cfg)
            if report:
                report(metrics, path)
            interval_losses, interval_time = [], 0.0
        if status == "diverged":
            break

    final = t.history[-1]
    return TrainResult(status, final, multiplier_table(t.model), t.history)


def report_metrics(t: Trainer, losses: list[float], seconds: float, grad_norm: float, mult_norm: float,
                   elapsed_s: float, evaluate: Callable[[], tuple[float, dict]] | None) -> dict:
    """One report's metrics (docs/CONTRACTS.md) at step t.step, after the steps whose train
    losses are `losses` took `seconds`; `evaluate` gives (val_loss, activations), None once the
    run diverged. `t` needs cfg, step, flops_per_token, peak and model (the fused trainer
    passes one member)."""
    cfg = t.cfg
    metrics = {"step": t.step, "tokens": t.step * cfg.tokens_per_step,
               "train_loss": sum(losses) / len(losses),
               "lr": cfg.lr * lr_factor(t.step - 1, cfg),  # the base LR of the last step
               "grad_norm": grad_norm, "mult_grad_norm": mult_norm}
    tokens_per_s = len(losses) * cfg.tokens_per_step / max(seconds, 1e-9)
    metrics.update(tokens_per_s=tokens_per_s, flops=t.flops_per_token * metrics["tokens"], elapsed_s=elapsed_s)
    if t.peak:
        metrics["mfu"] = tokens_per_s * t.flops_per_token / t.peak
    if evaluate is None:
        metrics["val_loss"] = float("nan")
    else:
        metrics["val_loss"], acts = evaluate()
        metrics.update({f"act/{k}": v for k, v in acts.items()})
    metrics.update(layer_stats(t.model))
    return metrics


def final_metrics(t: Trainer, last: dict, status: str, diverged_at: int | None) -> dict:
    total, nonemb = t.model.count_params()
    vals = [h["val_loss"] for h in t.history + [last] if math.isfinite(h.get("val_loss", math.nan))]
    out = {"final": True, "status": status, "final_train_loss": last["train_loss"],
           "final_val_loss": last["val_loss"], "min_val_loss": min(vals) if vals else float("nan"),
           "n_params": total, "n_params_nonembedding": nonemb, "wall_time_s": last["elapsed_s"]}
    if diverged_at is not None:
        out["diverged_at_step"] = diverged_at
    return out


def _print_progress(m: dict, cfg: TrainConfig) -> None:
    done = m["step"] / cfg.steps
    eta = m["elapsed_s"] * (1 - done) / max(done, 1e-9)
    status = f" | {m['status'].upper()}" if m.get("final") and m["status"] != "finished" else ""
    print(f"step {m['step']:>6}/{cfg.steps} | train {m['train_loss']:.4f} | val {m['val_loss']:.4f} | "
          f"lr {m['lr']:.2e} | {m['tokens_per_s']:,.0f} tok/s | ETA {eta:,.0f}s{status}", file=sys.stderr, flush=True)
