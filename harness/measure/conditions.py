"""The machine's conditions while something is timed: is anyone else using the CPUs?

A timing is evidence only about the conditions it was taken in. On a shared machine other
processes take CPU time (and caches and memory bandwidth) from the case; in a virtual machine
the hypervisor may take the CPU away altogether ("steal"). ``Window`` reads the kernel's own
counters before and after a block of code:

- ``other_cpu``: the share of all CPUs' time that went to other processes while the block ran,
  from ``/proc/stat`` (every CPU's busy time) less this process's own CPU time (``os.times``,
  all its threads). 0 on an idle machine; 1 when every core was busy with other work.
- ``steal``: the share of all CPUs' time the hypervisor gave to other guests.
- ``load_avg``: the 1-minute load average at the end (``/proc/loadavg``).
- ``cpu_mhz``: the mean clock of the CPUs at the start (cpufreq where the kernel exposes it,
  else ``/proc/cpuinfo``); a throttled or power-saving CPU shows here.
- on CUDA, ``gpu_clock_mhz`` and ``gpu_temp_c`` where the driver reports them (through
  ``torch.cuda``, which needs the NVML bindings): a hot GPU clocks down.

Linux only; elsewhere each unreadable value is None, never an error. The counters tick at
USER_HZ (100 per second): over a 0.5 s window on 2 cores a share is known to about 1%.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already counted in user and nice, so the total stops at steal
_BUSY = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq
_STEAL, _TOTAL_FIELDS = 7, 8


@dataclass(frozen=True)
class Conditions:
    other_cpu: float | None = None
    steal: float | None = None
    load_avg: float | None = None
    cpu_mhz: float | None = None
    gpu_clock_mhz: float | None = None
    gpu_temp_c: float | None = None

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(values) < _TOTAL_FIELDS:
        return None
    busy = sum(values[i] for i in _BUSY)
    return busy, values[_STEAL], sum(values[:_TOTAL_FIELDS])


def _own_ticks() -> float:
    """This process's CPU time (all threads, user and system) in clock ticks."""
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


def load_avg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_mhz() -> float | None:
    """Mean current clock of the CPUs in MHz, or None where the kernel does not say."""
    freqs = []
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            freqs.append(int(path.read_text()) / 1000)  # kHz
        except (OSError, ValueError):
            continue
    if not freqs:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("cpu MHz"):
                    freqs.append(float(line.split(":", 1)[1]))
        except (OSError, ValueError):
            return None
    return sum(freqs) / len(freqs) if freqs else None


def gpu_state(device: str) -> dict[str, float | None]:
    """Clock (MHz) and temperature (C) of a CUDA device, None where they cannot be read."""
    if not device.startswith("cuda"):
        return {"gpu_clock_mhz": None, "gpu_temp_c": None}
    import torch  # only here: the analysis side reads Conditions without torch

    state: dict[str, float | None] = {}
    for key, read in (("gpu_clock_mhz", torch.cuda.clock_rate),
                      ("gpu_temp_c", torch.cuda.temperature)):  # fmt: skip
        try:
            state[key] = float(read(device))
        except Exception:  # no NVML bindings, or a driver that does not report it
            state[key] = None
    return state


class Window:
    """``with Window() as w: ...`` then ``w.conditions``: what the machine did meanwhile."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.conditions = Conditions()

    def __enter__(self) -> Window:
        self._mhz = cpu_mhz()
        self._gpu = gpu_state(self.device)
        self._start = _cpu_ticks(), _own_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        end, own_end = _cpu_ticks(), _own_ticks()
        start, own_start = self._start
        other = steal = None
        if start and end and end[2] > start[2]:
            total = end[2] - start[2]
            own = own_end - own_start
            other = min(1.0, max(0.0, (end[0] - start[0] - own) / total))
            steal = min(1.0, max(0.0, (end[1] - start[1]) / total))
        self.conditions = Conditions(
            other_cpu=other, steal=steal, load_avg=load_avg(), cpu_mhz=self._mhz, **self._gpu
        )


def snapshot(device: str = "cpu", seconds: float = 1.0) -> dict[str, Any]:
    """The machine's conditions over ``seconds`` of doing nothing (for ``meta.json``)."""
    import time

    with Window(device) as w:
        time.sleep(seconds)
    return w.conditions.fields()
