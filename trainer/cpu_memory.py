"""Let a CPU training process reuse the memory it freed (glibc malloc) instead of page-faulting
on every large activation, every step.

glibc hands out large blocks (above 128 KiB at start, a threshold it raises on its own up to
32 MiB) as fresh mappings and gives them back to the kernel on free, so each step touches new
zeroed pages again. Measured on the 2-core development machine (one thread): a fused pack of 8
width-64 models at 16 × 128 tokens per step took 32,600 minor page faults per step, a single
width-256 model 7,500; with mmap off and no trimming, 1–2 and 300–700 (tests/test_cpu_memory.py
counts them). Raising the threshold alone is not enough: it stops at 32 MiB, and a pack of 8
at width 128 has 32 MiB activations (31,000 faults per step). Preloading jemalloc or tcmalloc
(PyTorch's CPU tuning guide) does the same, but needs a library on every worker and a
restart; `mallopt` is glibc's own documented switch and takes effect at once. A training loop
reaches the same peak every step, so keeping freed blocks raises the memory held between
steps, not the peak. Elsewhere than glibc: a no-op.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # mallopt parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1              # an int; free heap top beyond 2 GiB still goes back

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Serve every block from glibc's heap (no mmap) and stop trimming it, once per process.
    True when the settings are in effect."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
