"""The stability rules, one by one, on stored rows (no torch, no device)."""

from __future__ import annotations

import pytest

from harness.analyse import stability
from harness.store.records import Status


def _row(**fields) -> dict:
    return {"status": Status.OK, "time_median_ms": 10.0, "time_iqr_ms": 0.5, **fields}


def test_a_stable_case_has_no_warnings_and_an_unmeasured_one_is_not_judged():
    assert stability.row_warnings(_row(other_cpu=0.05, steal=0.0, calibration_drift=0.1)) == []
    assert stability.row_warnings({"status": Status.OOM, "time_iqr_ms": 99.0}) == []


def test_spread():
    assert stability.row_warnings(_row(time_iqr_ms=1.5)) == [
        "spread: the IQR of the samples is 15% of their median"
    ]
    assert stability.spread([10, 10, 10, 10]) == 0.0
    assert stability.spread([5]) == 0.0
    assert stability.spread([8, 9, 10, 11, 12]) == pytest.approx(0.2)
    # CPU time is judged on its own columns
    cpu = _row(cpu_median_ms=10.0, cpu_iqr_ms=3.0)
    assert stability.row_warnings(cpu, "cpu")[0].startswith("spread: the IQR")
    assert (
        stability.row_warnings(_row(time_iqr_ms=3.0, cpu_median_ms=10, cpu_iqr_ms=0.1), "cpu") == []
    )


def test_busy_applies_to_wall_and_cpu_time_alike():
    busy = _row(other_cpu=0.8, cpu_median_ms=10.0, cpu_iqr_ms=0.1, threads=1)
    for metric in ("wall", "cpu"):
        assert stability.row_warnings(busy, metric) == [
            "busy: other processes used 80% of the CPUs"
        ]
    assert stability.row_warnings(_row(other_cpu=0.25)) == []  # the limit itself is allowed
    assert stability.row_warnings(_row(steal=0.2)) == ["busy: the hypervisor stole 20% of the CPUs"]


def test_drift_is_a_wall_time_rule():
    drifting = _row(calibration_drift=0.6, cpu_median_ms=10.0, cpu_iqr_ms=0.1)
    assert stability.row_warnings(drifting) == [
        "drift: the calibration changed by 60% across the case"
    ]
    assert stability.row_warnings(drifting, "cpu") == []


def test_reference_beside_the_case_against_the_runs():
    slow_moment = _row(process_calibration_ms="30 31 29")
    assert stability.row_warnings(slow_moment) == []  # no run reference to compare with
    assert stability.row_warnings(slow_moment, run_calibration_ms=12.0) == [
        "speed: the calibration ran 2.5x slower beside this case than at the start "
        "and end of the sweep"
    ]
    assert stability.row_warnings(slow_moment, run_calibration_ms=25.0) == []
    fast = stability.row_warnings(_row(process_calibration_ms="5"), run_calibration_ms=12.0)
    assert "2.4x faster" in fast[0]


def test_baselines_machine_not_comparable():
    assert stability.baseline_warning([10, 10], [12, 12], normalised=False) is None
    assert "1.3x slower" in stability.baseline_warning([10, 10], [13, 13], normalised=False)
    assert stability.baseline_warning([10, 10], [14, 14], normalised=True) is None
    assert "1.6x faster" in stability.baseline_warning([16], [10], normalised=True)
    assert stability.baseline_warning([], [10], normalised=True) is None  # an older baseline


def test_missing_or_garbled_conditions_are_not_warnings():
    old = {"status": Status.OK, "time_median_ms": 10.0, "time_iqr_ms": 0.2}  # before conditions
    assert stability.row_warnings(old) == []
    odd = _row(other_cpu="", steal=float("nan"), calibration_drift=None)
    assert stability.row_warnings(odd) == []
    assert stability.notes([("a @ 1K", ["busy: x"]), ("b @ 1K", [])]) == ["⚠ a @ 1K: busy: x"]
