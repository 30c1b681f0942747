"""Timers: warm up, then repeat; the caller gets every sample, in seconds.

CPU: ``torch.utils.benchmark.Timer`` (it fixes the thread count and amortises timer overhead by
running short calls several times per sample). CUDA: CUDA events around each call, with the L2
cache flushed before every sample as ``triton.testing.do_bench`` does, and a synchronisation
before reading the events: kernel launches are asynchronous, so wall time after the launch
would measure only the launch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils.benchmark as tbench

FLOOR_SAMPLES = 3  # never fewer, however slow the call: a spread needs several samples


@dataclass(frozen=True)
class TimingSettings:
    warmup_s: float = 0.2  # warm up at least this long before measuring
    warmup_calls: int = 2  # ... and at least this many calls
    min_time_s: float = 0.5  # measure at least this long ...
    min_repeats: int = 5  # ... and at least this many samples ...
    max_time_s: float = 60.0  # ... but past this, stop at FLOOR_SAMPLES
    sample_s: float = 0.01  # CPU: short calls are batched so one sample lasts about this long


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(
    call: Callable[[], object],
    device: str,
    settings: TimingSettings,
    done: tuple[int, float, float] = (0, 0.0, 0.0),
) -> float:
    """Run ``call`` until warm; returns the last call's duration (seconds) as an estimate.

    ``done`` counts warm-up the caller already did: (calls, seconds spent, last call's seconds).
    """
    calls, spent, last = done
    start = time.perf_counter() - spent
    while calls < settings.warmup_calls or time.perf_counter() - start < settings.warmup_s:
        t0 = time.perf_counter()
        call()
        synchronize(device)
        last = time.perf_counter() - t0
        calls += 1
        if time.perf_counter() - start > settings.max_time_s:
            break
    return last


def _wanted(samples: list[float], elapsed: float, settings: TimingSettings) -> bool:
    if len(samples) < FLOOR_SAMPLES:
        return True
    if elapsed >= settings.max_time_s:
        return False
    return len(samples) < settings.min_repeats or elapsed < settings.min_time_s


def time_cpu(
    call: Callable[[], object], estimate_s: float, settings: TimingSettings
) -> list[float]:
    timer = tbench.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    number = max(1, int(settings.sample_s / max(estimate_s, 1e-9)))
    samples: list[float] = []
    start = time.perf_counter()
    while _wanted(samples, time.perf_counter() - start, settings):
        samples.append(timer.timeit(number).mean)  # mean over `number` back-to-back calls
    return samples


def time_cuda(call: Callable[[], object], device: str, settings: TimingSettings) -> list[float]:
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)  # larger than any L2
    samples: list[float] = []
    start = time.perf_counter()
    while _wanted(samples, time.perf_counter() - start, settings):
        flush.zero_()
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        torch.cuda.synchronize(device)
        samples.append(begin.elapsed_time(end) / 1e3)
    return samples


def measure(
    call: Callable[[], object],
    device: str,
    settings: TimingSettings,
    done: tuple[int, float, float] = (0, 0.0, 0.0),
) -> list[float]:
    """Warm up (beyond ``done``, see ``warm_up``), then time ``call``; returns seconds."""
    estimate = warm_up(call, device, settings, done)
    if torch.device(device).type == "cuda":
        return time_cuda(call, device, settings)
    return time_cpu(call, estimate, settings)


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range (Q3 - Q1) of the samples."""
    if len(samples) == 1:
        return samples[0], 0.0
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q2, q3 - q1
