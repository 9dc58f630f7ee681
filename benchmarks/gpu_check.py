"""Everything only a GPU can show, in one run of at most 8 minutes on a machine with a CUDA GPU:
one line per check, PASS / FAIL / SKIP, with the number it rests on.

    python benchmarks/gpu_check.py             # on the GPU machine, from the repository root
    python benchmarks/gpu_check.py --dry-run   # what it would run, each command's flags checked

Checks, each under its own time bound (BOUNDS_S; their sum is TOTAL_BOUND_S):
  cuda tests     the test suite's CUDA cases (pytest -m cuda)
  fused          a fused pack of 16 against its members one at a time, width 64 (issue 10: >= 4x)
  multipliers    vector multipliers' step time over none at widths >= 256 (<= 1.02x)
  mfu            the trainer's MFU on a mid-sized model (reported; > 0 on a known GPU)
  lr_transfer    sweeps/lr_transfer.yaml reduced (2 widths x 2 LRs x 3 parametrizations, 1 seed,
                 200 steps) through `scalelab run`: every trial finishes
  ddp            data-parallel trials over NCCL on all visible GPUs (at least two), when sweeps
                 have `resources: {workers: N}`; otherwise "skipped: no workers option"

Without a GPU it only dry-runs, so that it cannot rot: tests/test_gpu_check.py runs the dry run.
Each check's output goes to --out (a fresh temporary folder by default), named in its line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# Seconds each check may take (a check past its bound is killed and FAILs); the whole fits in 8 min.
BOUNDS_S = {"cuda tests": 60, "fused": 80, "multipliers": 80, "mfu": 40, "lr_transfer": 150, "ddp": 60}
TOTAL_BOUND_S = 8 * 60

FUSED_GOAL = 4.0          # issue 10: a pack of 16 steps >= 4x its members one at a time on a GPU
MULTIPLIER_LIMIT = 1.02   # vector multipliers cost <= 2% of step time at widths >= 256
MFU_MODEL = ["d_model=1024", "n_layers=8", "head_dim=64", "seq_len=1024", "batch_size=16", "steps=60",
             "eval_interval=60", "eval_batches=1", "warmup_steps=10", "device=cuda"]
LR_TRANSFER_REDUCED = {"d_model": [256, 512], "lr": [9.765625e-04, 3.90625e-03]}


@dataclass
class Check:
    name: str
    argv: list[str]
    judge: Callable[[str, Path], tuple[bool, str]]  # (its output, its folder) -> (passed, the number)
    helps: list[list[str]]          # commands whose output must name every flag of argv (the dry run's check)
    prepare: Callable[[Path], None] = lambda folder: None   # files the command needs

    @property
    def bound_s(self) -> int:
        return BOUNDS_S[self.name]


# --- judging the outputs ----------------------------------------------------------------------

def judge_pytest(output: str, folder: Path) -> tuple[bool, str]:
    tail = output.strip().splitlines()[-1] if output.strip() else "no output"
    passed = " passed" in tail and "failed" not in tail and "error" not in tail
    return passed, tail.strip("= ")


def judge_fused(output: str, folder: Path) -> tuple[bool, str]:
    """bench_fused.py's rows: width K alone-ms fused-ms median [q1, q3]."""
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+) \[", output, re.M)
    k16 = [float(r) for w, k, r in rows if int(k) == 16]
    if not k16:
        return False, "no K=16 row in bench_fused.py's output"
    return max(k16) >= FUSED_GOAL, f"pack of 16 at width 64: {max(k16):.2f}x one at a time (goal >= {FUSED_GOAL:g}x)"


def judge_multipliers(output: str, folder: Path) -> tuple[bool, str]:
    """bench_multipliers.py's one-model table: per width, the medians of scalar/none,
    vector/none and vector (autograd)/none; vector is the second."""
    section = output.split("## Learnable multipliers, one model", 1)[-1].split("##", 1)[0]
    ratios = {}
    for line in section.splitlines():
        found = re.findall(r"([\d.]+) \[", line)
        if re.match(r"^\s*\d+\s", line) and len(found) >= 2:
            ratios[int(line.split()[0])] = float(found[1])
    wide = {w: r for w, r in ratios.items() if w >= 256}
    if not wide:
        return False, "no width >= 256 in bench_multipliers.py's output"
    text = ", ".join(f"{r:.3f}x at {w}" for w, r in sorted(wide.items()))
    return max(wide.values()) <= MULTIPLIER_LIMIT, f"vector / none: {text} (limit {MULTIPLIER_LIMIT}x)"


def judge_mfu(output: str, folder: Path) -> tuple[bool, str]:
    metrics = json.loads((folder / "mfu.json").read_text())["metrics"]
    mfu = metrics.get("mfu")
    text = f"{metrics['tokens_per_s']:,.0f} tokens/s"
    if mfu is None:
        return True, text + ", MFU unknown (the GPU is not in trainer/estimate.py's PEAK_FLOPS)"
    return 0 < mfu < 1, text + f", MFU {mfu:.1%}"


def judge_sweep(trials: int) -> Callable[[str, Path], tuple[bool, str]]:
    def judge(output: str, folder: Path) -> tuple[bool, str]:
        found = re.search(r"sweep \S+: (\d+) finished, (\d+) diverged, (\d+) failed", output)
        if not found:
            return False, "no summary line in the run's output"
        return int(found.group(1)) == trials, found.group(0)
    return judge


# --- the checks -------------------------------------------------------------------------------

def reduced_lr_transfer(folder: Path) -> None:
    """sweeps/lr_transfer.yaml at 2 widths x 2 LRs x 3 parametrizations, 1 seed, 200 steps."""
    doc = yaml.safe_load((REPO / "sweeps" / "lr_transfer.yaml").read_text())
    doc["grid"] = dict(LR_TRANSFER_REDUCED)
    doc["seeds"] = 1
    doc["base"].update(steps=200, warmup_steps=20, eval_interval=100, eval_batches=2)
    doc["resources"]["cpu"] = 2
    (folder / "lr_transfer_reduced.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def reduced_trials() -> int:
    return len(LR_TRANSFER_REDUCED["d_model"]) * len(LR_TRANSFER_REDUCED["lr"]) * 3


def workers_option() -> bool:
    """Whether sweeps can ask for data-parallel workers (`resources: {workers: N}`)."""
    from orchestrator.spec_schema import ResourcesFile

    return "workers" in ResourcesFile.model_fields


def ddp_sweep(workers: int) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        doc = {"name": "gpu_check_ddp", "experiment": "gpu_check_ddp",
               "base": {"d_model": 256, "n_layers": 2, "head_dim": 64, "seq_len": 256, "batch_size": 16,
                        "steps": 100, "warmup_steps": 10, "eval_interval": 50, "eval_batches": 2, "device": "cuda"},
               "grid": {"lr": [1e-3, 3e-3]},
               "resources": {"cpu": 2, "gpu": 1, "workers": workers}, "retries": 0}
        (folder / "ddp.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return write


def scalelab(*args: str) -> list[str]:
    return [PY, "-m", "orchestrator.cli", *args]


def checks(folder: Path, gpus: int) -> list[Check]:
    tracking = "sqlite:///" + str(folder / "mlflow.db")
    store = str(folder / "store")
    fused = [PY, "benchmarks/bench_fused.py", "--widths", "64", "--ks", "1,16", "--rounds", "5", "--steps", "5",
             "--clock", "wall", "--batch-size", "8", "--seq-len", "64"]
    mults = [PY, "benchmarks/bench_multipliers.py", "--widths", "256,512", "--rounds", "15", "--steps", "4",
             "--pack", "0", "--no-plain", "--clock", "wall"]
    out = [
        Check("cuda tests", [PY, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"],
              judge_pytest, [[PY, "-m", "pytest", "--help"]]),
        Check("fused", fused, judge_fused, [fused[:2] + ["--help"]]),
        Check("multipliers", mults, judge_multipliers, [mults[:2] + ["--help"]]),
        Check("mfu", scalelab("train", *MFU_MODEL, "--quiet", "--json", str(folder / "mfu.json")), judge_mfu,
              [scalelab("train", "--help")]),
        Check("lr_transfer", scalelab("run", str(folder / "lr_transfer_reduced.yaml"), "--tracking-uri", tracking,
                                      "--storage", store), judge_sweep(reduced_trials()),
              [scalelab("run", "--help"), scalelab("validate", str(folder / "lr_transfer_reduced.yaml"))],
              prepare=reduced_lr_transfer),
    ]
    if workers_option() and gpus != 1:  # the dry run (no GPU) checks the command as for 2 GPUs
        out.append(Check("ddp", scalelab("run", str(folder / "ddp.yaml"), "--tracking-uri", tracking,
                                         "--storage", store), judge_sweep(2),
                         [scalelab("run", "--help"), scalelab("validate", str(folder / "ddp.yaml"))],
                         prepare=ddp_sweep(max(gpus, 2))))
    return out


def ddp_skipped(gpus: int) -> str | None:
    """Why the ddp check does not run, or None."""
    if not workers_option():
        return "skipped: no workers option"
    if gpus == 1:
        return "skipped: one visible GPU; DDP over NCCL needs two"
    return None


# --- running ----------------------------------------------------------------------------------

def run_check(check: Check, folder: Path) -> str:
    log = folder / f"{check.name.replace(' ', '_')}.log"
    started = time.monotonic()
    try:
        check.prepare(folder)
        done = subprocess.run(check.argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=check.bound_s, env=child_env())
        output = done.stdout
        log.write_text(output)
        passed, text = check.judge(output, folder) if done.returncode == 0 else (
            False, f"exit {done.returncode}: {last_line(output)}")
    except subprocess.TimeoutExpired as err:
        partial = err.output or ""
        log.write_text(partial if isinstance(partial, str) else partial.decode(errors="replace"))
        passed, text = False, f"over its bound of {check.bound_s} s"
    except Exception as err:  # noqa: BLE001 - a broken judge is one failed line, not a stopped checklist
        passed, text = False, f"{type(err).__name__}: {err}"
    seconds = time.monotonic() - started
    return f"{'PASS' if passed else 'FAIL'} {check.name}: {text} ({seconds:.0f} s; log {log})"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


def dry_run(all_checks: list[Check], folder: Path) -> int:
    """Print each command with its bound; run each check's `helps` (all at once) and fail when
    one exits non-zero or does not name a flag the command uses."""
    problems = []
    running = []
    for check in all_checks:
        check.prepare(folder)
        print(f"would run ({check.bound_s} s at most) {check.name}: {' '.join(check.argv)}")
        for argv in check.helps:
            running.append((check, argv, subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                                          stderr=subprocess.STDOUT, text=True, env=child_env())))
    if ddp_skipped(2):
        print(f"ddp: {ddp_skipped(2)}")
    for check, argv, proc in running:
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            problems.append(f"{check.name}: `{' '.join(argv[1:])}` exited {proc.returncode}: {last_line(output)}")
        elif "--help" in argv:
            missing = [f for f in flags(check.argv) if f not in output]
            if missing:
                problems.append(f"{check.name}: {' '.join(argv[1:3])} does not take {', '.join(missing)}")
    total = sum(c.bound_s for c in all_checks)
    print(f"bounds: {total} s in all (at most {TOTAL_BOUND_S} s)")
    if total > TOTAL_BOUND_S:
        problems.append(f"the checks' bounds add up to {total} s, over {TOTAL_BOUND_S} s")
    for problem in problems:
        print(f"BROKEN {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print what would run and check those commands exist "
                    "(the default without a GPU)")
    ap.add_argument("--out", help="folder for each check's log and files (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    folder.mkdir(parents=True, exist_ok=True)
    import torch  # after --help: seconds to import

    gpus = torch.cuda.device_count()
    if args.dry_run or not gpus:
        print("dry run" + ("" if args.dry_run else " (torch sees no CUDA GPU)") + f"; files in {folder}")
        return dry_run(checks(folder, gpus), folder)
    print(f"{gpus} GPU(s): {torch.cuda.get_device_name()}; torch {torch.__version__}; logs in {folder}", flush=True)
    failed = 0
    for check in checks(folder, gpus):
        line = run_check(check, folder)
        failed += line.startswith("FAIL")
        print(line, flush=True)
    if ddp_skipped(gpus):
        print(f"SKIP ddp: {ddp_skipped(gpus)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
