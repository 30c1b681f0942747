"""CPU peak memory: measured with freed memory returned first; timed with memory recycled."""

from __future__ import annotations

import pytest
import torch

from harness.measure import memory
from harness.measure.memory import malloc_for_measuring, malloc_for_timing, peak_bytes

MIB = 2**20
glibc = pytest.mark.skipif(memory._glibc() is None, reason="needs glibc's mallopt")


def rss() -> int:
    return memory._status_kib("VmRSS") * 1024


@glibc
def test_timing_keeps_freed_memory_and_measuring_returns_it():
    assert malloc_for_timing()
    blocks = [torch.ones(4096) for _ in range(4096)]  # 64 MiB in 16 KiB heap blocks
    del blocks
    kept = rss()
    again = [torch.ones(4096) for _ in range(4096)]  # served from what was kept
    assert rss() < kept + 8 * MIB
    del again
    assert malloc_for_measuring()
    # kept memory would let a measured call reuse it without the resident set growing
    assert rss() < kept - 32 * MIB
    peak, total = peak_bytes(lambda: torch.ones(5 * MIB).sum(), "cpu")
    assert total == 5 * MIB and 18 * MIB <= peak <= 40 * MIB
    malloc_for_timing()


def test_a_call_that_allocates_nothing_new_has_a_small_peak():
    x = torch.randn(256, 256)
    peak, _ = peak_bytes(lambda: x.add_(1.0), "cpu")
    assert peak < 2 * MIB
    malloc_for_timing()
