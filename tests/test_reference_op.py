from harness.measure.reference_op import measure_reference
from harness.measure.timing import TimingSettings
from harness.store.runs import reference_ms


def test_the_reference_matmul_is_timed_like_a_case():
    quick = TimingSettings(warmup_s=0.01, min_time_s=0.05, min_repeats=3)
    ref = measure_reference("cpu", quick, threads=1)
    assert ref["op"].startswith("matmul float32 [1024, 1024]")
    assert len(ref["samples_ms"]) >= 3 and ref["median_ms"] > 0.1  # 2 GFLOP: not free
    assert min(ref["samples_ms"]) <= ref["median_ms"] <= max(ref["samples_ms"])


def test_reference_time_of_a_run():
    assert reference_ms({}) is None  # recorded before runs had one
    assert reference_ms({"reference_op": {"before": {"median_ms": 10.0}}}) == 10.0
    both = {"reference_op": {"before": {"median_ms": 10.0}, "after": {"median_ms": 14.0}}}
    assert reference_ms(both) == 12.0
