"""One row from a case measured in several processes (``--processes K``).

Samples taken in one process share that process's moment: on a shared machine a slow stretch
lasts seconds, so a case timed once can be 20-70% off however many samples it takes, and its
samples' spread does not show it. K processes, each with its own warm-up and its own
calibration time, give K independent medians; a comparison judges those
(``harness.analyse.regression``), and the row's median is their median.

How each field combines is declared beside it, in ``CaseResult``'s field metadata
(``records.combine_rule``), so that a new field cannot be forgotten here: without a rule it
would not load (tests/test_repeats.py holds every rule to one this module applies).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from typing import Any

from harness.measure.timing import median_iqr
from harness.store.records import CaseResult, Status, combine_rule, parse_floats


def _joined(values: list) -> str:
    return " ".join(values)


# rule -> how the processes' values become the row's (over the processes that have the field)
PER_FIELD: dict[str, Callable[[list], Any]] = {
    "median": statistics.median,
    "max": max,
    "min": min,
    "sum": sum,
    "join": _joined,
}


def _samples(parts: list[dict], column: str) -> list[float]:
    return [s for p in parts for s in parse_floats(p.get(column))]


def _iqr(samples: list[float]) -> float | None:
    """The IQR of every process's samples: the spread within and between processes."""
    return median_iqr(samples)[1] if samples else None


# rule -> a statistic of every process's samples of the field's ``of``
OF_SAMPLES: dict[str, Callable[[list[float]], Any]] = {"iqr": _iqr, "count": len}


def combine(parts: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    """The fields of one row from each process's fields (``planned`` processes were to run). A
    process that did not finish ends the case: its status and reason stand, and say which
    process it was."""
    if not parts:
        raise ValueError("no process results to combine")
    if planned == 1:
        return parts[0]
    for i, part in enumerate(parts):
        if part.get("status") != Status.OK:
            reason = part.get("reason", "")
            return {**part, "reason": f"process {i + 1} of {planned}: {reason}".rstrip(": ")}
    row: dict[str, Any] = {}
    for field in dataclasses.fields(CaseResult):
        rule, of = combine_rule(field)
        name = "pass" if field.name == "pass_" else field.name
        values = [p[name] for p in parts if p.get(name) is not None]
        if rule == "case":
            continue
        if rule in OF_SAMPLES:
            samples = _samples(parts, of)
            if samples:
                row[name] = OF_SAMPLES[rule](samples)
        elif rule == "same":
            if name in parts[0]:
                row[name] = parts[0][name]
        elif rule == "reason":  # a failed output check in any process stays on the row
            reasons = [v for v in values if v]
            if reasons:
                row[name] = reasons[0]
        elif values:
            value = PER_FIELD[rule](values)
            # the median of two whole numbers (bytes, calls) may not be one
            row[name] = int(value) if str(field.type).startswith("int") else value
    return row
