"""One row from a case measured in several processes (``--processes K``).

Samples taken in one process share that process's moment: on a shared machine a slow stretch
lasts seconds, so a case timed once can be 20-70% off however many samples it takes, and its
samples' spread does not show it. K processes, each with its own warm-up and its own
reference-operation time, give K independent medians; the regression check judges those
(``harness.analyse.regression``), and the row's median is their median.

Every measured field has a rule in ``RULES`` (a test holds the table to ``CaseResult``'s
fields): a field without one would silently keep the first process's value.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from harness.measure.timing import median_iqr
from harness.store.records import parse_floats


def _median(values: list) -> float:
    return statistics.median(values)


def _joined(values: list) -> str:
    return " ".join(values)


def _all_samples(parts: list[dict], column: str) -> list[float]:
    return [s for p in parts for s in parse_floats(p.get(column))]


def _iqr_of(column: str) -> Callable[[list[dict]], float | None]:
    """The IQR of every process's samples: the spread within and between processes."""

    def iqr(parts: list[dict]) -> float | None:
        samples = _all_samples(parts, column)
        return median_iqr(samples)[1] if samples else None

    return iqr


# field -> how the processes' values become the row's (over the processes that have the field)
PER_FIELD: dict[str, Callable[[list], Any]] = {
    # the median of the processes' medians: robust to one process caught in a slow stretch
    "time_median_ms": _median,
    "cpu_median_ms": _median,
    "prepare_ms": _median,
    "first_call_ms": _median,
    "peak_mem_bytes": lambda v: int(statistics.median(v)),
    "err_vs_full": _median,
    "warmup_calls": max,
    "max_err": max,  # the worst process: a check that failed anywhere failed
    "wall_s": sum,
    # every process's values kept, in order
    "time_samples_ms": _joined,
    "cpu_samples_ms": _joined,
    "process_medians_ms": _joined,
    "process_ref_ms": _joined,
    "process_cpu_medians_ms": _joined,
    "process_ref_cpu_ms": _joined,
    # the conditions of the worst process: one busy moment makes the case suspect
    "ref_drift": max,
    "other_cpu": max,
    "steal": max,
    "load_avg": max,
    "cpu_mhz": min,
    "gpu_clock_mhz": min,
    "gpu_temp_c": max,
}
# fields computed from all processes' rows together
WHOLE: dict[str, Callable[[list[dict]], Any]] = {
    "time_iqr_ms": _iqr_of("time_samples_ms"),
    "cpu_iqr_ms": _iqr_of("cpu_samples_ms"),
    "repeats": lambda parts: len(_all_samples(parts, "time_samples_ms")),
}
# the same in every process (the case's own description)
SAME = ("status", "check_rows", "threads")


def combine(parts: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    """The fields of one row from each process's fields (``planned`` processes were to run). A
    process that did not finish ends the case: its status and reason stand, and say which
    process it was."""
    if not parts:
        raise ValueError("no process results to combine")
    if planned == 1:
        return parts[0]
    for i, part in enumerate(parts):
        if part.get("status") != "ok":
            reason = part.get("reason", "")
            return {**part, "reason": f"process {i + 1} of {planned}: {reason}".rstrip(": ")}
    row = {k: parts[0][k] for k in SAME if k in parts[0]}
    for field, rule in PER_FIELD.items():
        values = [p[field] for p in parts if p.get(field) is not None]
        if values:
            row[field] = rule(values)
    for field, rule in WHOLE.items():
        value = rule(parts)
        if value is not None:
            row[field] = value
    failed_checks = [p["reason"] for p in parts if p.get("reason")]
    if failed_checks:
        row["reason"] = failed_checks[0]
    return row
