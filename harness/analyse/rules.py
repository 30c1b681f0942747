"""What a comparison decides, and by which settings: the verdict of a case, the outcome of a
whole comparison (its exit code), the tolerances and the settings of a comparison.

Plain Python, so that the command line builds its options from them without loading the
statistics (numpy, pandas): ``--help`` answers at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from harness.store.records import METRICS


class Verdict(StrEnum):
    """What a comparison says of one case, new run against baseline."""

    REGRESSED = "regressed"  # slower beyond tolerance and significantly, hungrier, newly failing
    SLOWER = "slower"  # significantly, within the tolerance
    SAME = "same"
    FASTER = "faster"  # significantly
    LEANER = "leaner"  # of memory only: less beyond the tolerance (no verdict of its own)
    FIXED = "fixed"  # failed or was skipped in the baseline, measured and correct now
    UNMEASURED = "unmeasured"  # not measured on at least one side, and not a new failure
    INCONCLUSIVE = "inconclusive"  # measured under conditions that cannot support a verdict
    NEW = "new"  # only in the new run
    MISSING = "missing"  # only in the baseline


class Outcome(StrEnum):
    """What a whole comparison says (its exit code)."""

    PASSED = "passed"  # no case regressed, every case decided
    REGRESSED = "regressed"  # a case regressed
    INCONCLUSIVE = "inconclusive"  # none regressed, but a case could not be decided


@dataclass(frozen=True)
class Tolerances:
    """How much growth is allowed, and how sure a time regression must be."""

    time: float = 0.10  # relative growth of the median time
    memory: float = 0.01  # relative growth of the peak, on CUDA
    cpu_memory: float = 0.05  # on CPU: the larger of this relative growth ...
    cpu_memory_floor_bytes: int = 2 * 2**20  # ... and this absolute one
    alpha: float = 0.01  # significance level of the Mann-Whitney test
    resamples: int = 2000  # bootstrap resamples
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.time, self.memory, self.cpu_memory, self.cpu_memory_floor_bytes) < 0:
            raise ValueError("tolerances must not be negative")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be positive, not {self.resamples}")


def parse_fraction(text: str) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1 (for the CLI's tolerance options)."""
    text = text.strip()
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a non-negative fraction: {text!r}")
    return value


@dataclass(frozen=True)
class CompareSettings:
    """How a comparison judges: tolerances, which time (``metric``: "wall" or "cpu", the
    process's CPU time), whether times are divided by the calibration, and whether
    unstable conditions may still give a verdict (``strict``)."""

    tolerances: Tolerances = field(default_factory=Tolerances)
    metric: str = "wall"
    normalise: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r}: use {' or '.join(METRICS)}")
