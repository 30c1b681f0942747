"""A fixed operation timed in every run, so that runs made on different days (or on a machine
that has since slowed down) can be compared fairly: ``compare --normalise`` divides each case's
time by its run's reference time.

The operation is a dense float32 matmul, ``[M, M] @ [M, M]`` on random normal inputs (M = 1024
on CPU, 4096 on CUDA): compute-bound like attention, with no dependence on the code under test.
It is timed like any case (warm-up, then samples) before the sweep and again after it, so that
drift within a run shows too.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.timing import TimingSettings, measure, median_iqr

SIZES = {"cpu": 1024, "cuda": 4096}


def describe(device: str) -> str:
    m = SIZES[torch.device(device).type]
    return f"matmul float32 [{m}, {m}] @ [{m}, {m}]"


def measure_reference(device: str, settings: TimingSettings, threads: int | None = None) -> dict:
    """Times the reference operation; returns its median, IQR and samples in ms."""
    m = SIZES[torch.device(device).type]
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, m, device=device, generator=gen)
    b = torch.randn(m, m, device=device, generator=gen)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        samples, _ = measure(lambda: a @ b, device, settings)
    finally:
        torch.set_num_threads(previous)
    median, iqr = median_iqr(samples)
    return {
        "op": describe(device),
        "median_ms": median * 1e3,
        "iqr_ms": iqr * 1e3,
        "samples_ms": [round(s * 1e3, 6) for s in samples],
    }


def reference_ms(meta: dict[str, Any]) -> float | None:
    """The run's reference time: the mean of the medians measured before and after the sweep;
    None for a run recorded without one."""
    ref = meta.get("reference_op") or {}
    medians = [ref[k]["median_ms"] for k in ("before", "after") if k in ref]
    return sum(medians) / len(medians) if medians else None
