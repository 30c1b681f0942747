"""Judging one case's numbers, new against baseline: time by significance tests against a
tolerance, memory by the tolerance alone (``harness.analyse.regression`` applies them to runs).

Time is judged on repeated measurements, not on two medians, so that noise does not fail CI: a
time has *regressed* when its median grew beyond the tolerance AND the growth is significant, by
the two-sided Mann-Whitney U test (Mann & Whitney 1947; exact null distribution for small samples
without ties, normal approximation with tie and continuity corrections otherwise) and by a
percentile bootstrap confidence interval of the ratio of medians (Efron & Tibshirani 1993,
ch. 13). Memory is one number per case: the CUDA allocator's peak is deterministic, so its
tolerance is relative only; the CPU resident-set peak has page-level slack, so the tolerance
there is the larger of a relative and an absolute one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from harness.analyse.rules import Tolerances, Verdict

EXACT_MAX_N = 20  # exact U distribution up to this many samples in all (C(20, 10) = 184756)


@cache
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many orderings of n a's and m b's give U = 0 .. n*m (U counts pairs with a > b)."""
    if n == 0 or m == 0:
        return (1,)
    # the largest value is an a (beating all m b's) or a b (beating none)
    with_a, with_b = _u_counts(n - 1, m), _u_counts(n, m - 1)
    return tuple(
        (with_a[u - m] if 0 <= u - m < len(with_a) else 0) + (with_b[u] if u < len(with_b) else 0)
        for u in range(n * m + 1)
    )


def mann_whitney_p(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that a and b come from one distribution."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("both samples need at least one value")
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    # average rank of each distinct value (1-based), so tied values share their mean rank
    mean_rank = np.cumsum(counts) - (counts - 1) / 2
    u = float(mean_rank[inverse[:n]].sum() - n * (n + 1) / 2)
    ties = counts > 1
    if n + m <= EXACT_MAX_N and not ties.any():
        dist = np.asarray(_u_counts(n, m), dtype=float)
        k = round(u)
        tail = min(dist[: k + 1].sum(), dist[k:].sum()) / dist.sum()
        return float(min(1.0, 2 * tail))
    big_n = n + m
    tie_term = float((counts[ties] ** 3 - counts[ties]).sum()) / (big_n * (big_n - 1))
    sigma = math.sqrt(n * m / 12 * (big_n + 1 - tie_term))
    if sigma == 0:  # every value equal
        return 1.0
    z = max(abs(u - n * m / 2) - 0.5, 0.0) / sigma
    return float(min(1.0, math.erfc(z / math.sqrt(2))))


def bootstrap_ratio_ci(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of median(b) / median(a); deterministic."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    # [resamples, len] index draws: every resample's median in one vectorised call
    med_a = np.median(a[rng.integers(0, len(a), size=(resamples, len(a)))], axis=1)
    med_b = np.median(b[rng.integers(0, len(b), size=(resamples, len(b)))], axis=1)
    low, high = np.quantile(med_b / med_a, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def min_p(n: int, m: int) -> float:
    """The smallest two-sided p-value the U test can give for these sample sizes."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


@dataclass(frozen=True)
class TimeVerdict:
    ratio: float  # median(new) / median(base), after scaling
    ci_low: float  # bootstrap CI of the ratio (NaN without enough samples)
    ci_high: float
    p: float  # Mann-Whitney two-sided p-value (NaN without enough samples)
    verdict: Verdict  # REGRESSED, SLOWER, FASTER or SAME
    enough_samples: bool  # False: decided on the medians alone against the tolerance


def verdict_time(
    a_samples: np.ndarray | list[float],
    b_samples: np.ndarray | list[float],
    tol: Tolerances,
) -> TimeVerdict:
    """Judge new values ``b`` against baseline values ``a`` (samples or process medians,
    normalised or not: ``time_values`` prepares them)."""
    a = np.asarray(a_samples, dtype=float)
    b = np.asarray(b_samples, dtype=float)
    ratio = float(np.median(b) / np.median(a))
    # below 3 a side, or where even complete separation cannot reach alpha (3 vs 3 gives
    # p >= 0.1, 4 vs 4 p >= 0.029), the test would call everything "same": use the medians
    if min(len(a), len(b)) < 3 or min_p(len(a), len(b)) >= tol.alpha:
        if ratio > 1 + tol.time:
            word = Verdict.REGRESSED
        elif ratio < 1 - tol.time:
            word = Verdict.FASTER
        else:
            word = Verdict.SAME
        return TimeVerdict(ratio, math.nan, math.nan, math.nan, word, False)
    p = mann_whitney_p(a, b)
    low, high = bootstrap_ratio_ci(a, b, resamples=tol.resamples, seed=tol.seed)
    if p < tol.alpha and low > 1:
        word = Verdict.REGRESSED if ratio > 1 + tol.time else Verdict.SLOWER
    elif p < tol.alpha and high < 1:
        word = Verdict.FASTER
    else:
        word = Verdict.SAME
    return TimeVerdict(ratio, low, high, p, word, True)


def verdict_memory(
    a_bytes: float, b_bytes: float, device: str, tol: Tolerances
) -> tuple[float, Verdict]:
    """Ratio new/base and REGRESSED, LEANER or SAME (unknown peaks count as SAME)."""
    if pd.isna(a_bytes) or pd.isna(b_bytes):
        return math.nan, Verdict.SAME
    a, b = float(a_bytes), float(b_bytes)
    ratio = b / a if a > 0 else (1.0 if b == 0 else math.inf)
    if str(device).startswith("cuda"):
        allowed = tol.memory * a
    else:
        allowed = max(tol.cpu_memory * a, tol.cpu_memory_floor_bytes)
    if b - a > allowed:
        return ratio, Verdict.REGRESSED
    if a - b > allowed:
        return ratio, Verdict.LEANER
    return ratio, Verdict.SAME
