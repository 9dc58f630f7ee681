"""trainer/cpu_memory.py: once a trainer has started on CPU, large tensors freed by one step are
reused by the next instead of being mapped (and page-faulted) afresh. Counted in fresh
processes (the setting is per process), by minor page faults, not by time."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 20 rounds of allocating, writing and freeing blocks of 8 MiB (2,048 pages) and 40 MiB (above
# the ceiling of glibc's mmap threshold), as a step's activations are; prints the minor page
# faults of the last 10 rounds.
PROBE = """
import resource, sys, torch
if sys.argv[1] == "trainer":
    from trainer.config import TrainConfig
    from trainer.loop import Trainer
    Trainer(TrainConfig(d_model=32, n_layers=1, head_dim=16, seq_len=16, batch_size=2, device="cpu", threads=1))
def rounds(n):
    for _ in range(n):
        for k in range(4):
            t = torch.ones(2 * 1024 * 1024 + 1000 * k)
            del t
        t = torch.ones(10 * 1024 * 1024)
        del t
rounds(10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_a_cpu_trainer_reuses_freed_activation_memory():
    from trainer.cpu_memory import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator is left alone")
    plain, tuned = faults("plain"), faults("trainer")
    # plain glibc maps such blocks afresh: thousands of faults per block, 50 blocks
    assert plain > 20_000, plain
    assert tuned < 1_000, (plain, tuned)

