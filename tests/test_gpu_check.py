"""benchmarks/gpu_check.py cannot rot on a machine without a GPU: its dry run prints every
command it would run and checks that each exists and takes the flags it is given; its judges
read the benchmarks' own table formats."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from helpers import REPO, venv_env

spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gpu_check  # dataclasses look their module up there
spec.loader.exec_module(gpu_check)


def test_the_dry_run_names_every_check_and_each_command_takes_its_flags(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=venv_env(PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "BROKEN" not in out
    for name in ("cuda tests", "fused", "multipliers", "mfu", "lr_transfer"):
        assert f"({gpu_check.BOUNDS_S[name]} s at most) {name}: " in out
    assert ("ddp: skipped: no workers option" in out) != gpu_check.workers_option()
    assert sum(gpu_check.BOUNDS_S.values()) <= gpu_check.TOTAL_BOUND_S
    assert (tmp_path / "lr_transfer_reduced.yaml").is_file()


def test_a_flag_a_command_does_not_take_is_reported(tmp_path, capsys):
    broken = gpu_check.Check("fused", [sys.executable, "benchmarks/bench_fused.py", "--no-such-flag"],
                             gpu_check.judge_fused, [[sys.executable, "benchmarks/bench_fused.py", "--help"]])
    assert gpu_check.dry_run([broken], tmp_path) == 1
    assert "BROKEN fused: benchmarks/bench_fused.py --help does not take --no-such-flag" in capsys.readouterr().out


def test_judges_read_the_benchmark_tables():
    fused = ("width   K  alone ms/member-step  fused ms/member-step  fused throughput ratio [IQR]\n"
             "    64   1                   1.0                   1.0             1.00 [0.98, 1.02]\n"
             "    64  16                   1.0                   0.2             5.10 [4.90, 5.30]\n")
    assert gpu_check.judge_fused(fused, None) == (True, "pack of 16 at width 64: 5.10x one at a time (goal >= 4x)")
    mults = ("## Learnable multipliers, one model: step time relative to no multipliers (median of rounds)\n"
             " width   none ms  scalar ms  vector ms  vector (autograd) ms  ...\n"
             "   256  10.0  10.1  10.2  10.9  1.004 [1.001, 1.008] (1.000-1.010)  1.015 [1.010, 1.020] "
             "(1.009-1.021)  1.090 [1.080, 1.100] (1.070-1.110)\n"
             "   512  20.0  20.1  20.5  21.9  1.004 [1.001, 1.008] (1.000-1.010)  1.025 [1.020, 1.030] "
             "(1.019-1.031)  1.090 [1.080, 1.100] (1.070-1.110)\n"
             "\n## Trainer vs a plain loop\n   256   1.00  1.02  1.020 [1.0, 1.1] (1.0-1.1)\n")
    passed, text = gpu_check.judge_multipliers(mults, None)
    assert not passed and text == "vector / none: 1.015x at 256, 1.025x at 512 (limit 1.02x)"
    assert gpu_check.judge_sweep(12)("sweep lr_transfer: 12 finished, 0 diverged, 0 failed, 0 not done", None)[0]
    assert gpu_check.judge_pytest("...\n3 passed in 4.1s\n", None) == (True, "3 passed in 4.1s")
    assert not gpu_check.judge_pytest("1 failed, 2 passed in 4.1s", None)[0]
