"""Several processes' results of one case become one row."""

from __future__ import annotations

import pytest

from harness.store.records import Status
from harness.sweep.repeats import combine


def _ok(median: float, ref: float, mem: int = 1000, err: float = 1e-6, reason: str = "") -> dict:
    samples = [median * f for f in (0.99, 1.0, 1.01)]
    return {
        "status": Status.OK, "reason": reason, "time_median_ms": median, "time_iqr_ms": 0.01,
        "repeats": 3, "warmup_calls": 2, "prepare_ms": 0.5, "first_call_ms": 2 * median,
        "time_samples_ms": " ".join(f"{s:.6g}" for s in samples),
        "process_medians_ms": f"{median:.6g}", "process_calibration_ms": f"{ref:.6g}",
        "peak_mem_bytes": mem, "max_err": err, "err_vs_full": 0.5, "check_rows": 8,
        "threads": 2, "wall_s": 1.0,
    }  # fmt: skip


def test_one_process_is_its_own_row():
    part = _ok(3.0, 10.0)
    assert combine([part], 1) == part


def test_processes_combine_into_the_median_of_medians():
    row = combine([_ok(3.0, 10.0, mem=1000), _ok(9.0, 30.0, mem=1200), _ok(4.0, 11.0, mem=900)], 3)
    assert row["time_median_ms"] == 4.0  # the slow process does not drag the median
    assert row["process_medians_ms"] == "3 9 4" and row["process_calibration_ms"] == "10 30 11"
    assert row["repeats"] == 9 and len(row["time_samples_ms"].split()) == 9
    assert row["time_iqr_ms"] > 1.0  # the spread between processes shows
    assert row["peak_mem_bytes"] == 1000 and row["wall_s"] == pytest.approx(3.0)


def test_a_failed_check_in_any_process_stays_on_the_row():
    row = combine(
        [_ok(3.0, 10.0), _ok(3.1, 10.0, err=0.5, reason="CHECK FAILED: max error 0.5")], 2
    )
    assert row["reason"].startswith("CHECK FAILED") and row["max_err"] == 0.5


def test_a_failing_process_ends_the_case_with_its_status():
    died = {"status": Status.OOM, "reason": "process killed (SIGKILL), likely out of memory"}
    row = combine([_ok(3.0, 10.0), died], 5)
    assert row["status"] == Status.OOM
    assert row["reason"] == "process 2 of 5: process killed (SIGKILL), likely out of memory"
    with pytest.raises(ValueError):
        combine([], 1)


def test_every_field_has_a_rule_this_module_applies():
    import dataclasses

    from harness.store.records import CaseResult, combine_rule
    from harness.sweep.repeats import OF_SAMPLES, PER_FIELD

    known = set(PER_FIELD) | set(OF_SAMPLES) | {"case", "same", "reason"}
    for field in dataclasses.fields(CaseResult):
        rule, of = combine_rule(field)
        assert rule in known, field.name
        assert (of is not None) == (rule in OF_SAMPLES), field.name
        if of is not None:
            assert of in CaseResult.__dataclass_fields__, field.name


def test_conditions_keep_the_worst_process_and_cpu_time_combines_like_wall_time():
    parts = [_ok(3.0, 10.0), _ok(4.0, 11.0), _ok(5.0, 12.0)]
    for i, p in enumerate(parts):
        p.update(other_cpu=0.1 * i, steal=0.0, load_avg=1.0 + i, cpu_mhz=2600.0 - i,
                 calibration_drift=0.01,
                 cpu_median_ms=2.0 + i, cpu_samples_ms=f"{2 + i} {2.1 + i}",
                 process_cpu_medians_ms=f"{2 + i}", process_calibration_cpu_ms="9")  # fmt: skip
    row = combine(parts, 3)
    assert row["other_cpu"] == pytest.approx(0.2) and row["load_avg"] == 3.0
    assert row["cpu_mhz"] == 2598.0
    assert row["cpu_median_ms"] == 3.0 and row["process_cpu_medians_ms"] == "2 3 4"
    assert row["cpu_iqr_ms"] > 0.5 and row["process_calibration_cpu_ms"] == "9 9 9"
    assert "gpu_temp_c" not in row  # no process reported one
