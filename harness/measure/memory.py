"""Peak memory of one call beyond what was allocated before it.

CUDA: the caching allocator's own peak counter. CPU: the allocator keeps no peak, so the call
runs in a fresh process (see ``harness.measure.worker``) and we read the kernel's resident-set
high-water mark. Linux lets a process reset that mark (``/proc/self/clear_refs``, value 5), so
the peak can be taken after warm-up calls.

For that call glibc's malloc is first told to serve every block over 64 KiB with mmap and to
keep no free memory (``malloc_for_measuring``: ``mallopt``, then ``malloc_trim``), so that
memory freed earlier has left the process and the peak is not hidden in recycled heap pages.
That setting must not be in force while timing: every intermediate tensor would be a fresh mmap
that page-faults on first touch, which made small CPU cases about 40% slower and twice as
variable from process to process. Nor is glibc's default right for timing: its thresholds move
with the order of allocations and frees, and the same case settled at 12 ms in some processes
and 25 ms in others. So timing runs under ``malloc_for_timing``: blocks up to 32 MiB (glibc's
largest threshold) come from the heap, and freed memory is kept for reuse, as in a long-running
program that has reached its steady state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")
MEASURING_MMAP_THRESHOLD = 64 * 2**10
TIMING_MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TIMING_TRIM_THRESHOLD = 2**31 - 1  # an int: never give freed heap memory back while timing
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@cache
def _glibc() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path) if path else None
    except OSError:
        return None
    if libc is None or not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def malloc_for_timing() -> bool:
    """Blocks up to 32 MiB served from the heap and freed memory kept, from now on in this
    process (see the module docstring); False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, TIMING_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, TIMING_TRIM_THRESHOLD)
    return True


def malloc_for_measuring() -> bool:
    """Large blocks mmapped, freed memory returned at once, from now on in this process; False
    where the C library is not glibc (the CPU peak may then miss recycled memory)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, MEASURING_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 0)
    libc.malloc_trim(0)
    return True


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def available_bytes(device: str) -> int | None:
    """Memory the call could still use: free device memory, or MemAvailable on the host."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def limit_address_space(headroom_bytes: int) -> None:
    """Cap this process's address space so an oversized CPU case fails with an allocation error
    (a clean ``oom`` row) instead of waking the kernel's OOM killer on the whole machine."""
    size_kib = _status_kib("VmSize")
    if size_kib is None:
        return
    limit = size_kib * 1024 + headroom_bytes
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_bytes(call: Callable[[], T], device: str) -> tuple[int, T]:
    """Peak memory of one ``call`` beyond what was in use just before it, and its result. On
    CPU this switches malloc to ``malloc_for_measuring``: call ``malloc_for_timing`` before
    timing anything after it."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return peak, result
    malloc_for_measuring()
    if _reset_cpu_peak():
        before = (_status_kib("VmRSS") or 0) * 1024
        result = call()
        peak = (_status_kib("VmHWM") or 0) * 1024 - before
    else:  # no resettable high-water mark: fall back to the process's lifetime peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result = call()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return max(peak, 0), result
