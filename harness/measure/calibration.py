"""A fixed operation timed in every run, so that runs made on different days (or on a machine
that has since slowed down) can be compared fairly: ``compare --normalise`` divides each case's
time by its run's calibration time.

The operation is a dense float32 matmul, ``[M, M] @ [M, M]`` on random normal inputs (M = 1024
on CPU, 4096 on CUDA): compute-bound like attention, with no dependence on the code under test.
It is timed like any case (warm-up, then samples) before the sweep and again after it, so that
drift within a run shows too; and briefly inside every case's process, just before and after
the case is timed (``IN_CASE``). That last one is what ``--normalise`` divides by: a shared
machine's speed changes within seconds (on a 2-core cloud VM the matmul ran 1.7x slower for
10 s stretches), and a reference taken next to the case moves with it (the case-to-reference
ratio varied half as much as either time alone: coefficient of variation 7-10% against 15%).
"""

from __future__ import annotations

import torch

from harness.measure.timing import TimingSettings, measure, median_iqr

SIZES = {"cpu": 1024, "cuda": 4096}
# about 0.1 s on each side of a case: five to ten 1024^3 matmuls on a 2-core CPU
IN_CASE = TimingSettings(warmup_s=0.02, warmup_calls=2, settle_s=0.1, min_time_s=0.05)


def describe(device: str) -> str:
    m = SIZES[torch.device(device).type]
    return f"matmul float32 [{m}, {m}] @ [{m}, {m}]"


def time_calibration(
    device: str, settings: TimingSettings = IN_CASE, threads: int | None = None
) -> dict:
    """Times the calibration; returns its median, IQR and samples in ms."""
    m = SIZES[torch.device(device).type]
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, m, device=device, generator=gen)
    b = torch.randn(m, m, device=device, generator=gen)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        # into one output: no allocation (and no page faults) inside the timing
        out = torch.empty(m, m, device=device)
        samples, _ = measure(lambda: torch.matmul(a, b, out=out), device, settings)
    finally:
        torch.set_num_threads(previous)
    median, iqr = median_iqr(samples.wall)
    return {
        "op": describe(device),
        "median_ms": median * 1e3,
        "iqr_ms": iqr * 1e3,
        "samples_ms": [round(s * 1e3, 6) for s in samples.wall],
        # CPU time of the process (all threads); None on CUDA
        "cpu_median_ms": median_iqr(samples.cpu)[0] * 1e3 if samples.cpu else None,
    }
