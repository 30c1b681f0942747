"""Timers: warm up, then repeat; the caller gets every sample, in seconds.

CPU: short calls are run several times per sample to amortise the timer's overhead, and each
sample has two clocks: wall time (``perf_counter``) and the process's CPU time over all its
threads (``process_time``). On a busy machine the two part: wall time grows with every
neighbour that takes a core, CPU time of a single-threaded case hardly moves (README, "Which
time to judge"). CUDA: CUDA events around each call, with the L2
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

FLOOR_SAMPLES = 3  # never fewer, however slow the call: a spread needs several samples


@dataclass(frozen=True)
class TimingSettings:
    warmup_s: float = 0.2  # warm up at least this long before measuring
    warmup_calls: int = 2  # ... and at least this many calls ...
    stable_within: float = 0.2  # ... until two calls in a row agree within this fraction,
    settle_s: float = 3.0  # ... for at most this long after the first call (noise never agrees)
    min_time_s: float = 0.5  # measure at least this long ...
    min_repeats: int = 5  # ... and at least this many samples ...
    max_time_s: float = 60.0  # ... but past this, stop at FLOOR_SAMPLES (and stop warming up)
    sample_s: float = 0.01  # CPU: short calls are batched so one sample lasts about this long


@dataclass(frozen=True)
class WarmUp:
    """What warming up took: the calls' durations (seconds), the first one included."""

    durations: tuple[float, ...] = ()

    @property
    def calls(self) -> int:
        return len(self.durations)

    @property
    def spent(self) -> float:
        return sum(self.durations)

    def stable(self, within: float) -> bool:
        """The last two calls agree: compilation, autotuning and caches are behind us."""
        if len(self.durations) < 2:
            return False
        a, b = self.durations[-2:]
        return abs(a - b) <= within * min(a, b)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(call: Callable[[], object], device: str) -> tuple[float, object]:
    """One call, synchronised: (seconds, its result)."""
    t0 = time.perf_counter()
    result = call()
    synchronize(device)
    return time.perf_counter() - t0, result


def warm_up(
    call: Callable[[], object], device: str, settings: TimingSettings, done: WarmUp = WarmUp()
) -> WarmUp:
    """Call until warm: at least ``warmup_calls`` calls and ``warmup_s`` seconds, and then until
    two calls in a row agree within ``stable_within`` (a compiled or autotuned kernel takes
    several calls to settle) or ``settle_s`` have passed since the first call; never beyond
    ``max_time_s``. ``done`` is warm-up the caller already did; the result includes it."""
    durations = list(done.durations)

    def wanted() -> bool:
        if sum(durations) >= settings.max_time_s:
            return False
        if len(durations) < settings.warmup_calls or sum(durations) < settings.warmup_s:
            return True
        unsettled = not WarmUp(tuple(durations)).stable(settings.stable_within)
        return unsettled and sum(durations[1:]) < settings.settle_s

    while wanted():
        durations.append(timed_call(call, device)[0])
    return WarmUp(tuple(durations))


def _wanted(samples: list[float], elapsed: float, settings: TimingSettings) -> bool:
    if len(samples) < FLOOR_SAMPLES:
        return True
    if elapsed >= settings.max_time_s:
        return False
    return len(samples) < settings.min_repeats or elapsed < settings.min_time_s


@dataclass(frozen=True)
class Samples:
    """Seconds per call, one value per sample: wall time, and on CPU the process's CPU time."""

    wall: list[float]
    cpu: list[float]  # all threads of the process; empty on CUDA, where the GPU does the work


def time_cpu(call: Callable[[], object], estimate_s: float, settings: TimingSettings) -> Samples:
    number = max(1, int(settings.sample_s / max(estimate_s, 1e-9)))
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while _wanted(wall, time.perf_counter() - start, settings):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):  # back-to-back calls: each sample is their mean
            call()
        w1, c1 = time.perf_counter(), time.process_time()
        wall.append((w1 - w0) / number)
        cpu.append((c1 - c0) / number)
    return Samples(wall, cpu)


def time_cuda(call: Callable[[], object], device: str, settings: TimingSettings) -> Samples:
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
    return Samples(samples, [])


def measure(
    call: Callable[[], object], device: str, settings: TimingSettings, done: WarmUp = WarmUp()
) -> tuple[Samples, WarmUp]:
    """Warm up (beyond ``done``, see ``warm_up``), then time ``call``: (samples, the warm-up)."""
    warm = warm_up(call, device, settings, done)
    if torch.device(device).type == "cuda":
        return time_cuda(call, device, settings), warm
    return time_cpu(call, warm.durations[-1] if warm.calls else 0.0, settings), warm


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range (Q3 - Q1) of the samples."""
    if len(samples) == 1:
        return samples[0], 0.0
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q2, q3 - q1
