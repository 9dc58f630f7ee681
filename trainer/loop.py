"""The one training loop, for one model or a fused pack of K. `train(config) -> TrainResult` trains
one model (`fused.train_fused` a pack). Reports go through a plain callback so the orchestrator
can forward them to Ray without the trainer importing Ray or MLflow.

`run` alone decides, for every model it trains: when it has diverged, when it is evaluated and
reported, what its final report holds, that its checkpoint is written before its report is sent
and how its elapsed time is kept; `autocast` is the one precision rule. What `run` steps is an
`Engine`: `Trainer` (one model, any optimizer) or `fused.FusedTrainer` (K models of one shape,
stacked). Each model's own state is a `RunState`.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Protocol

import numpy as np
import torch

from .checkpoint import LATEST, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, UserError
from .cpu_memory import keep_freed_memory
from .data import Batches
from .distributed import Shard, data_parallel, device_of_rank, micro_batches, no_sync
from .estimate import PEAK_FLOPS, flops_per_token
from .metrics import (ACT, DIVERGED, DIVERGED_AT_STEP, ELAPSED_S, FINAL, FINAL_TRAIN_LOSS, FINAL_VAL_LOSS, FINISHED,
                      FLOPS, GRAD_NORM, LR, MFU, MIN_VAL_LOSS, MULT_GRAD_NORM, N_PARAMS, N_PARAMS_NONEMBEDDING, STATUS,
                      STEP, TOKENS, TOKENS_PER_S, TRAIN_LOSS, VAL_LOSS, WALL_TIME_S)
from .model import GPT
from .optim import Optimizers, lr_factor
from .stats import layer_stats, multiplier_table

Report = Callable[[dict, "str | None"], None]
TRAINING = "training"  # a RunState's status until it ends FINISHED or DIVERGED (never reported)


@dataclass
class TrainResult:
    status: str                       # FINISHED | DIVERGED
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


def autocast(device: torch.device) -> ContextManager:
    """The precision every forward pass runs in, alone or in a pack: bf16 autocast on a GPU, fp32
    elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class RunState:
    """One model's run: its own modules and how far it has come. What its reports are computed
    from and what its checkpoint holds (`state_dict`, the one checkpoint format). In a fused
    pack `model` and `opt` are the member's own GPT and Optimizers, which hold its slice of the
    stack whenever it is reported or checkpointed (Engine.sync, Engine.optimizer_state)."""
    cfg: TrainConfig
    model: GPT
    opt: Optimizers
    batches: Batches
    flops_per_token: float
    peak: float | None
    label: str = ""  # before its progress lines
    step: int = 0
    initial_loss: float | None = None
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0  # the run's wall time at its last checkpoint (earlier segments of a resumed run)
    status: str = TRAINING
    diverged_at: int | None = None
    losses: list[float] = field(default_factory=list)  # train losses since the last report
    grad_norm: float = 0.0  # of the last step
    mult_norm: float = 0.0

    @classmethod
    def build(cls, cfg: TrainConfig, batches: Batches, device: torch.device, label: str = "",
              devices: int = 1) -> "RunState":
        """`devices`: how many train it together (their peak FLOP/s add up for MFU)."""
        torch.manual_seed(cfg.seed)  # a model's init is set by its own seed, alone or in a pack
        model = GPT(cfg).to(device)
        peak = peak_flops(cfg, device)
        return cls(cfg, model, Optimizers(model, cfg), batches, flops_per_token(cfg), peak and peak * devices, label)

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

    def result(self) -> TrainResult:
        last = self.history[-1]
        return TrainResult(last[STATUS], last, multiplier_table(self.model), self.history)


class Engine(Protocol):
    """What `run` trains: K models stepped together, one RunState each (a lone Trainer is K = 1)."""
    members: list[RunState]
    step: int  # steps taken by the models still training

    def train_members(self) -> tuple[list[float], list[float], list[float]]:
        """One step of every model: (train losses, gradient norms, multiplier gradient norms)."""

    def evaluate_members(self) -> list[tuple[float, dict[str, float]]]:
        """Each model's (validation loss, activations)."""

    def sync(self, k: int) -> None:
        """members[k].model holds model k's current weights after this."""

    def freeze(self, k: int) -> None:
        """Model k diverged: it takes no further updates."""

    def optimizer_state(self, k: int) -> ContextManager:
        """members[k].opt holds model k's optimizer state while the block runs."""

    def resumed(self) -> None:
        """Every member's state was just loaded from its checkpoint: take it up."""


class Trainer:
    """One model, any optimizer (Muon included): the engine of a lone run, on one process or on
    every rank of a process group (trainer/distributed.py). A step sees the same global batch
    however it is cut: into ranks, and on each rank into passes of `micro_batch_size` rows
    whose gradients add up before the one optimizer step. The coordinate check and the
    benchmarks step it directly (train_step, evaluate)."""

    def __init__(self, cfg: TrainConfig, batches: Batches | None = None):
        self.shard = Shard.current()
        self.device = device_of_rank(start_runtime(cfg))
        self.run = RunState.build(cfg, batches or Batches(cfg), self.device, devices=self.shard.world)
        self.members = [self.run]
        self.parallel = data_parallel(self.run.model, self.shard, self.device)
        self.forward = torch.compile(self.parallel) if cfg.compile else self.parallel

    @property
    def step(self) -> int:
        return self.run.step

    def train_step(self) -> tuple[float, float, float]:
        r = self.run
        x, y = r.batches.train(r.step)
        r.opt.set_lr(lr_factor(r.step, r.cfg))
        batch = r.cfg.batch_size
        passes = micro_batches(*self.shard.rows(batch), r.cfg.micro_batch_size)
        loss = torch.zeros((), device=self.device)  # the global batch's mean, the same on every rank
        for i, (a, b) in enumerate(passes):
            # a pass's mean loss, weighted by its share of the global batch (x world: DDP
            # averages over ranks), so the gradients add up to the whole batch's mean
            weight = (b - a) * self.shard.world / batch
            xs, ys = (t[a:b].to(self.device, non_blocking=True) for t in (x, y))
            with no_sync(self.parallel, last=i == len(passes) - 1):
                with autocast(self.device):
                    _, part = self.forward(xs, ys)
                (part if weight == 1 else part * weight).backward()
            loss += part.detach().float() * ((b - a) / batch)
        clip = r.cfg.grad_clip if r.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(r.opt.clipped_params(), clip)
        mult = r.opt.multiplier_params()
        mult_norm = torch.nn.utils.get_total_norm([p.grad for p in mult if p.grad is not None]) if mult else None
        r.opt.step()
        r.opt.zero_grad()
        r.step += 1
        loss = self.shard.sum(loss)
        return loss.item(), grad_norm.item(), (mult_norm.item() if mult_norm is not None else 0.0)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        r = self.run
        if not self.shard.writes:  # the model is the same on every rank: rank 0 alone reports it
            return math.nan, {}
        record: dict[str, float] = {}
        losses = []
        for i in range(r.cfg.eval_batches):
            x, y = (t.to(self.device) for t in r.batches.val(i))
            with autocast(self.device):
                _, loss = r.model(x, y, record=record if i == 0 and r.cfg.record_activations else None)
            losses.append(loss.item())
        return sum(losses) / len(losses), record

    # the Engine
    def train_members(self) -> tuple[list[float], list[float], list[float]]:
        loss, grad_norm, mult_norm = self.train_step()
        return [loss], [grad_norm], [mult_norm]

    def evaluate_members(self) -> list[tuple[float, dict[str, float]]]:
        return [self.evaluate()]

    def sync(self, k: int) -> None:
        pass  # the model is its own

    def freeze(self, k: int) -> None:
        pass  # the run ends with it

    def optimizer_state(self, k: int) -> ContextManager:
        return contextlib.nullcontext()

    def resumed(self) -> None:
        pass


def train(cfg: TrainConfig, report: Report | None = None, checkpoint_dir: str | None = None,
          resume_from: str | None = None, progress: bool = False, progress_s: float = 0.0,
          label: str = "") -> TrainResult:
    """Train one model. `report(metrics, checkpoint_path)` is called at every eval point; the
    last report carries `final: True` and the final metrics (see docs/CONTRACTS.md).
    `resume_from`: a checkpoint path, or "latest" (the newest in `checkpoint_dir`).
    `progress`: a line at every eval point; `progress_s`: a line at most every that many
    seconds (none in a run shorter than that), `label` before it.
    On the ranks of a process group (trainer/distributed.py) every rank trains its rows of each
    batch and resumes from the same checkpoint; rank 0 alone writes checkpoints and prints, and
    only its reports hold the validation loss (`report` is called on every rank, at the same
    steps, so a caller can keep the ranks in step)."""
    trainer = Trainer(cfg)
    trainer.run.label = label
    resume = resume_paths(resume_from if resume_from in (None, LATEST) else [resume_from], [checkpoint_dir])
    writes = trainer.shard.writes
    return run(trainer, [report], [checkpoint_dir if writes else None], resume, progress and writes,
               progress_s=progress_s if writes else 0.0)[0]


def run(engine: Engine, reports: list[Report | None], dirs: list[str | None],
        resume_from: str | list[str | None] | None = None, progress: bool = False,
        on_end: Callable[[int, TrainResult], None] | None = None, progress_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic) -> list[TrainResult]:
    """Train every model of `engine` to its end; one TrainResult per model, in order.
    `reports[k](metrics, checkpoint_path)` gets model k's reports; `dirs[k]` is where its
    checkpoints go; `resume_from` is "latest" (each model's newest checkpoint in its directory)
    or one checkpoint path (or None) per model. `on_end(k, result)` is called right after model
    k's final report, while the others may still train. `progress` prints a line per model at
    every eval point; `progress_s` > 0 one at most every that many seconds of `clock`."""
    members = engine.members
    throttle = Throttle(progress_s, clock)
    resume(engine, resume_paths(resume_from, dirs))
    cfg = members[0].cfg  # steps and eval_interval: a pack's members share them (pack_rules.PACK_FIELDS)
    # elapsed time: each checkpoint holds the run's elapsed_s; a resumed run counts on from it
    elapsed, segment_start = max(m.elapsed for m in members), time.perf_counter()
    interval_time = 0.0  # time in train steps since the last eval point

    while engine.step < cfg.steps and any(m.status == TRAINING for m in members):
        tic = time.perf_counter()
        losses, grad_norms, mult_norms = engine.train_members()
        interval_time += time.perf_counter() - tic
        eval_point = engine.step % cfg.eval_interval == 0 or engine.step == cfg.steps
        due: list[int] = []  # the models reported at this step
        for k, m in enumerate(members):
            if m.status != TRAINING:
                continue
            m.step, m.grad_norm, m.mult_norm = engine.step, grad_norms[k], mult_norms[k]
            m.losses.append(losses[k])
            if m.initial_loss is None:
                m.initial_loss = losses[k]
            if not math.isfinite(losses[k]) or losses[k] > m.cfg.divergence_factor * m.initial_loss:
                m.status, m.diverged_at = DIVERGED, engine.step
                engine.freeze(k)
                due.append(k)
            elif eval_point:
                due.append(k)
        if throttle.due():
            for m in members:
                if m.status == TRAINING:
                    _print_line(m, interval_time)
        if not due:
            continue
        now = elapsed + time.perf_counter() - segment_start
        evals = engine.evaluate_members() if any(members[k].status == TRAINING for k in due) else None
        paths: dict[int, str | None] = {}
        for k in due:
            m = members[k]
            engine.sync(k)
            metrics = report_metrics(m, interval_time, now, None if m.status == DIVERGED else evals[k])
            if m.status == DIVERGED or engine.step == cfg.steps:
                if m.status == TRAINING:
                    m.status = FINISHED
                metrics.update(final_metrics(m, metrics))
            m.history.append(metrics)
            m.losses = []
            paths[k] = None
            if dirs[k] and m.status != DIVERGED:
                m.elapsed = metrics[ELAPSED_S]
                with engine.optimizer_state(k):
                    paths[k] = save_checkpoint(dirs[k], m.step, m.state_dict())
        if any(paths.values()):
            elapsed, segment_start = now, time.perf_counter()
        for k in due:  # every checkpoint of this step is written before any report is sent
            if progress:
                _print_progress(members[k])
            if reports[k]:
                reports[k](members[k].history[-1], paths[k])
            if on_end and members[k].status != TRAINING:
                on_end(k, members[k].result())
        if eval_point:
            interval_time = 0.0

    return [m.result() for m in members]


def resume_paths(resume_from: str | list[str | None] | None, dirs: list[str | None]) -> list[str | None]:
    """One checkpoint path (or None) per model: "latest" is the newest in each model's directory."""
    if resume_from == LATEST:
        return [latest_checkpoint(d) if d else None for d in dirs]
    return list(resume_from) if resume_from else [None] * len(dirs)


def resume(engine: Engine, paths: list[str | None]) -> None:
    """Load every model's checkpoint; a pack resumes together, from one step."""
    if not any(paths):
        return
    if not all(paths):
        missing = [k for k, p in enumerate(paths) if not p]
        raise UserError(f"members {missing} have no checkpoint to resume from while the others do; "
                        "a pack resumes together (start the pack afresh, or leave those members out)")
    for m, path in zip(engine.members, paths):
        m.load_state_dict(load_checkpoint(path, m.cfg))
    steps = [m.step for m in engine.members]
    if len(set(steps)) != 1:
        raise UserError(f"the members' checkpoints are at different steps {steps} "
                        "(paths: " + ", ".join(map(str, paths)) + "); a pack resumes from one step: leave out "
                        "members that already reported their final result")
    engine.resumed()


def report_metrics(m: RunState, seconds: float, elapsed_s: float, evaluated: tuple[float, dict] | None) -> dict:
    """One report's metrics (docs/CONTRACTS.md) at step m.step, after the steps whose train
    losses are `m.losses` took `seconds`; `evaluated` is (val_loss, activations), None once the
    run diverged."""
    cfg = m.cfg
    metrics = {STEP: m.step, TOKENS: m.step * cfg.tokens_per_step,
               TRAIN_LOSS: sum(m.losses) / len(m.losses),
               LR: cfg.lr * lr_factor(m.step - 1, cfg),  # the base LR of the last step
               GRAD_NORM: m.grad_norm, MULT_GRAD_NORM: m.mult_norm}
    tokens_per_s = len(m.losses) * cfg.tokens_per_step / max(seconds, 1e-9)
    metrics.update({TOKENS_PER_S: tokens_per_s, FLOPS: m.flops_per_token * metrics[TOKENS], ELAPSED_S: elapsed_s})
    if m.peak:
        metrics[MFU] = tokens_per_s * m.flops_per_token / m.peak
    if evaluated is None:
        metrics[VAL_LOSS] = float("nan")
    else:
        metrics[VAL_LOSS], acts = evaluated
        metrics.update({f"{ACT}{k}": v for k, v in acts.items()})
    metrics.update(layer_stats(m.model))
    return metrics


def final_metrics(m: RunState, last: dict) -> dict:
    total, nonemb = m.model.count_params()
    vals = [h[VAL_LOSS] for h in m.history + [last] if math.isfinite(h.get(VAL_LOSS, math.nan))]
    out = {FINAL: True, STATUS: m.status, FINAL_TRAIN_LOSS: last[TRAIN_LOSS],
           FINAL_VAL_LOSS: last[VAL_LOSS], MIN_VAL_LOSS: min(vals) if vals else float("nan"),
           N_PARAMS: total, N_PARAMS_NONEMBEDDING: nonemb, WALL_TIME_S: last[ELAPSED_S]}
    if m.diverged_at is not None:
        out[DIVERGED_AT_STEP] = m.diverged_at
    return out


class Throttle:
    """When a long run prints its next progress line: every `every` seconds of `clock`, the first
    only `every` seconds after the start, so a run shorter than that prints none. 0: never."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic):
        self.every, self.clock = every, clock
        self.last = clock()

    def due(self) -> bool:
        if self.every <= 0:
            return False
        now = self.clock()
        if now - self.last < self.every:
            return False
        self.last = now
        return True


def progress_line(r: RunState, seconds: float) -> str:
    """One line of a training model between its reports: step, mean train loss of the steps since
    its last report (which took `seconds`), its last val loss, tokens/s."""
    last = r.history[-1] if r.history else {}
    if r.losses:
        train_loss = sum(r.losses) / len(r.losses)
        tokens_per_s = len(r.losses) * r.cfg.tokens_per_step / max(seconds, 1e-9)
    else:
        train_loss, tokens_per_s = last.get(TRAIN_LOSS, math.nan), last.get(TOKENS_PER_S, math.nan)
    val = last.get(VAL_LOSS, math.nan)
    val_text = f"{val:.4f}" if math.isfinite(val) else "-"
    return (f"{r.label}step {r.step}/{r.cfg.steps} | train {train_loss:.4f} | val {val_text} | "
            f"{tokens_per_s:,.0f} tok/s")


def _print_line(r: RunState, seconds: float) -> None:
    print(progress_line(r, seconds), file=sys.stderr, flush=True)


def _print_progress(r: RunState) -> None:
    m, steps = r.history[-1], r.cfg.steps
    done = m[STEP] / steps
    eta = m[ELAPSED_S] * (1 - done) / max(done, 1e-9)
    status = f" | {m[STATUS].upper()}" if m.get(FINAL) and m[STATUS] != FINISHED else ""
    print(f"{r.label}step {m[STEP]:>6}/{steps} | train {m[TRAIN_LOSS]:.4f} | val {m[VAL_LOSS]:.4f} | "
          f"lr {m[LR]:.2e} | {m[TOKENS_PER_S]:,.0f} tok/s | ETA {eta:,.0f}s{status}", file=sys.stderr, flush=True)
