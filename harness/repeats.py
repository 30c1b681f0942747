"""One row from a case measured in several processes (``--processes K``).

Samples taken in one process share that process's moment: on a shared machine a slow stretch
lasts seconds, so a case timed once can be 20-70% off however many samples it takes, and its
samples' spread does not show it. K processes, each with its own warm-up and its own
reference-operation time, give K independent medians; the regression check judges those
(``harness.regression``), and the row's median is their median.
"""

from __future__ import annotations

import statistics
from typing import Any

from harness.records import parse_floats
from harness.timing import median_iqr


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
    samples = [s for p in parts for s in parse_floats(p["time_samples_ms"])]
    _, iqr = median_iqr(samples)
    failed_checks = [p["reason"] for p in parts if p.get("reason")]
    first = parts[0]
    return {
        **first,
        # the median of the processes' medians: robust to one process caught in a slow stretch
        "time_median_ms": statistics.median(p["time_median_ms"] for p in parts),
        "time_iqr_ms": iqr,  # of all samples: spread within and between processes
        "repeats": len(samples),
        "warmup_calls": max(p["warmup_calls"] for p in parts),
        "prepare_ms": statistics.median(p["prepare_ms"] for p in parts),
        "first_call_ms": statistics.median(p["first_call_ms"] for p in parts),
        "time_samples_ms": " ".join(p["time_samples_ms"] for p in parts),
        "process_medians_ms": " ".join(p["process_medians_ms"] for p in parts),
        "process_ref_ms": " ".join(p["process_ref_ms"] for p in parts),
        "peak_mem_bytes": int(statistics.median(p["peak_mem_bytes"] for p in parts)),
        "max_err": max(p["max_err"] for p in parts),
        "wall_s": sum(p.get("wall_s", 0.0) for p in parts),
        **({"reason": failed_checks[0]} if failed_checks else {}),
    }
