"""The runner: every failure becomes a row with its status, and the sweep goes on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.measure.timing import TimingSettings
from harness.store.records import COLUMNS, Status
from harness.store.storage import read_results
from harness.sweep.config import SweepConfig
from harness.sweep.runner import run_sweep

QUICK = TimingSettings(warmup_s=0.01, min_time_s=0.02, min_repeats=3, max_time_s=2.0)


def sweep(tmp_path: Path, backends, lengths=(128, 256, 512), passes=("fwd",), **kw) -> pd.DataFrame:
    config = SweepConfig(
        lengths=tuple(lengths),
        backends=tuple(backends),
        out_dir=tmp_path,
        passes=tuple(passes),
        heads=2,
        head_dim=16,
        timing=QUICK,
        **kw,
    )
    run_sweep(config)
    return read_results(tmp_path)


def statuses(df: pd.DataFrame, backend: str, pass_: str = "fwd") -> list[str]:
    rows = df[(df.backend == backend) & (df["pass"] == pass_)].sort_values("seq_len")
    return rows.status.tolist()


def reason(df: pd.DataFrame, backend: str, seq_len: int, pass_: str = "fwd") -> str:
    row = df[(df.backend == backend) & (df.seq_len == seq_len) & (df["pass"] == pass_)]
    return row.reason.item()


def test_error_becomes_a_row_and_the_sweep_goes_on(tmp_path, fake_backends):
    df = sweep(tmp_path, ["test-boom", "full-sdpa"])
    assert statuses(df, "test-boom") == [
        Status.OK,
        Status.ERROR,
        Status.ERROR,
    ]  # an error is not fatal
    assert "deliberate failure" in reason(df, "test-boom", 256)
    assert statuses(df, "full-sdpa") == [Status.OK, Status.OK, Status.OK]


def test_oom_skips_longer_lengths_and_the_backward_pass(tmp_path, fake_backends):
    df = sweep(tmp_path, ["test-hog"], passes=("fwd", "fwdbwd"))
    assert statuses(df, "test-hog", "fwd") == [Status.OK, Status.OOM, Status.SKIPPED]
    assert statuses(df, "test-hog", "fwdbwd") == [Status.OK, Status.SKIPPED, Status.SKIPPED]
    assert reason(df, "test-hog", 512) == "oom at length 256"
    assert reason(df, "test-hog", 256, "fwdbwd") == "oom at length 256 (fwd)"


def test_timeout_stops_the_case_and_skips_longer_lengths(tmp_path, fake_backends):
    df = sweep(tmp_path, ["test-sleepy"], case_timeout_s=4.0)
    assert statuses(df, "test-sleepy") == [Status.OK, Status.TIMEOUT, Status.SKIPPED]
    assert df[df.status == Status.TIMEOUT].wall_s.item() < 30


@pytest.mark.parametrize(("backend", "status", "text"), [
    ("test-segfault", Status.ERROR, "SIGSEGV"),
    ("test-killed", Status.OOM, "SIGKILL"),
])  # fmt: skip
def test_a_dying_process_becomes_a_row(tmp_path, fake_backends, backend, status, text):
    df = sweep(tmp_path, [backend], lengths=(128, 256))
    assert statuses(df, backend) == [Status.OK, status]
    assert text in reason(df, backend, 256)


def test_unsupported_backend_is_a_skipped_row_with_reasons(tmp_path, fake_backends):
    df = sweep(tmp_path, ["test-cuda-only"], lengths=(128,), passes=("fwd", "fwdbwd"))
    assert statuses(df, "test-cuda-only", "fwd") == [Status.SKIPPED]
    assert "device cpu not supported" in reason(df, "test-cuda-only", 128)
    assert "no backward pass" in reason(df, "test-cuda-only", 128, "fwdbwd")


def test_wrong_output_is_flagged_by_the_reference_check(tmp_path, fake_backends):
    df = sweep(tmp_path, ["test-wrong", "full-naive"], lengths=(128,))
    wrong = df[df.backend == "test-wrong"].iloc[0]
    assert wrong.status == Status.OK and wrong.reason.startswith("CHECK FAILED")
    assert wrong.max_err > 1e-2
    right = df[df.backend == "full-naive"].iloc[0]
    assert right.reason == "" and right.max_err < 1e-5


def test_a_nan_output_is_a_failed_check_that_storage_and_reports_survive(tmp_path, fake_backends):
    from harness.cli.app import main

    df = sweep(tmp_path, ["test-nan"], lengths=(128, 256))
    nan = df[df["seq_len"] == 256].iloc[0]
    assert nan.status == Status.OK and nan.reason.startswith("CHECK FAILED: max error nan")
    assert pd.isna(nan.max_err) and df["max_err"].dtype == float  # read back as a number
    assert df[df["seq_len"] == 128].iloc[0].max_err < 1e-5
    (tmp_path / "meta.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 0
    assert "CHECK FAILED" in (tmp_path / "report.md").read_text()


def test_case_that_cannot_fit_is_skipped_before_it_runs(tmp_path):
    # full-naive at 2^17 would need 2 * 2 heads * 2^34 scores * 4 bytes = 256 GiB
    df = sweep(tmp_path, ["full-naive"], lengths=(2**17,))
    assert statuses(df, "full-naive") == [Status.SKIPPED]
    assert reason(df, "full-naive", 2**17).startswith("predicted")


def test_results_have_every_column_and_real_numbers(tmp_path):
    # 512: the kernel's resident-set counters are batched per thread (up to 64 pages each), so
    # smaller cases' peaks can read 0
    df = sweep(tmp_path, ["full-naive"], lengths=(512,), passes=("fwd", "fwdbwd"))
    assert list(df.columns) == COLUMNS
    for _, row in df.iterrows():
        samples = [float(s) for s in row.time_samples_ms.split()]
        assert row.repeats == len(samples) >= QUICK.min_repeats
        assert min(samples) <= row.time_median_ms <= max(samples)
        assert row.time_median_ms > 0 and row.time_iqr_ms >= 0
        assert row.peak_mem_bytes > 0 and row.threads >= 1


def test_resume_completes_without_repeating(tmp_path):
    first = sweep(tmp_path, ["full-sdpa"], lengths=(128,))
    config = SweepConfig(
        lengths=(128, 256), backends=("full-sdpa",), out_dir=tmp_path, passes=("fwd",),
        heads=2, head_dim=16, timing=QUICK, resume=True,
    )  # fmt: skip
    new = run_sweep(config)
    assert [r.seq_len for r in new] == [256]
    df = read_results(tmp_path)
    assert sorted(df.seq_len) == [128, 256]
    assert df[df.seq_len == 128].time_median_ms.item() == first.time_median_ms.item()


def test_cpu_peak_memory_matches_the_score_matrices(tmp_path):
    """full-naive holds the N x N scores and their softmax at its peak; full-sdpa never does."""
    n, heads = 1024, 4
    config = SweepConfig(
        lengths=(n,), backends=("full-naive", "full-sdpa"), out_dir=tmp_path, passes=("fwd",),
        heads=heads, head_dim=64, timing=QUICK,
    )  # fmt: skip
    run_sweep(config)
    df = read_results(tmp_path).set_index("backend")
    expected = 2 * heads * n * n * 4
    assert 0.9 * expected <= df.loc["full-naive", "peak_mem_bytes"] <= 1.4 * expected
    assert df.loc["full-sdpa", "peak_mem_bytes"] < expected / 4


def test_processes_give_one_row_with_each_process_median(tmp_path, fake_backends):
    df = sweep(tmp_path, ["full-sdpa", "test-boom"], lengths=(128, 256), processes=3)
    row = df[(df.backend == "full-sdpa") & (df.seq_len == 128)].iloc[0]
    medians = [float(x) for x in row.process_medians_ms.split()]
    refs = [float(x) for x in row.process_calibration_ms.split()]
    assert len(medians) == len(refs) == 3 and min(medians) > 0 and min(refs) > 0
    assert row.time_median_ms == pytest.approx(sorted(medians)[1], rel=1e-5)
    assert len(row.time_samples_ms.split()) == row.repeats >= 3 * QUICK.min_repeats
    # the first process fails: the case ends there, and says which process it was
    assert reason(df, "test-boom", 256).startswith("process 1 of 3: RuntimeError")
