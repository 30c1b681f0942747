"""CPU peak memory: measured with freed memory returned first, timed with memory recycled."""

from __future__ import annotations

import pytest
import torch

from harness import memory
from harness.memory import malloc_for_measuring, peak_bytes

MIB = 2**20


def rss() -> int:
    return memory._status_kib("VmRSS") * 1024


@pytest.mark.skipif(memory._glibc() is None, reason="needs glibc's mallopt")
def test_freed_memory_leaves_the_process_before_a_measurement():
    with malloc_for_measuring():
        pass  # the steady state after it: freed heap memory is kept for reuse
    blocks = [torch.ones(4096) for _ in range(4096)]  # 64 MiB in 16 KiB heap blocks
    del blocks
    kept = rss()
    with malloc_for_measuring():
        # kept memory would let a call reuse it without the resident set growing
        assert rss() < kept - 32 * MIB
    peak, total = peak_bytes(lambda: torch.ones(5 * MIB).sum(), "cpu")
    assert total == 5 * MIB and 18 * MIB <= peak <= 40 * MIB


def test_a_call_that_allocates_nothing_new_has_a_small_peak():
    x = torch.randn(256, 256)
    peak, _ = peak_bytes(lambda: x.add_(1.0), "cpu")
    assert peak < 2 * MIB
