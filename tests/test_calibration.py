from harness.measure.calibration import time_calibration
from harness.measure.timing import TimingSettings
from harness.store.runs import calibration_ms


def test_the_reference_matmul_is_timed_like_a_case():
    quick = TimingSettings(warmup_s=0.01, min_time_s=0.05, min_repeats=3)
    ref = time_calibration("cpu", quick, threads=1)
    assert ref["op"].startswith("matmul float32 [1024, 1024]")
    assert len(ref["samples_ms"]) >= 3 and ref["median_ms"] > 0.1  # 2 GFLOP: not free
    assert min(ref["samples_ms"]) <= ref["median_ms"] <= max(ref["samples_ms"])


def test_reference_time_of_a_run():
    assert calibration_ms({}) is None  # recorded before runs had one
    assert calibration_ms({"calibration": {"before": {"median_ms": 10.0}}}) == 10.0
    both = {"calibration": {"before": {"median_ms": 10.0}, "after": {"median_ms": 14.0}}}
    assert calibration_ms(both) == 12.0
