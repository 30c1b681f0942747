"""The run folder format: rows appended one by one, read back whole; bad folders are refused."""

from __future__ import annotations

import pytest

from harness.records import COLUMNS, CaseResult
from harness.storage import (
    RunFolderError,
    append_result,
    check_appendable,
    finished_keys,
    read_meta,
    read_results,
    write_meta,
)


def result(seq_len: int, status: str = "ok", **kw) -> CaseResult:
    base = dict(
        backend="full-sdpa", family="full", label="full-sdpa", params='{"causal":false}',
        seq_len=seq_len, pass_="fwd", batch=1, heads=2, head_dim=16, dtype="float32",
        device="cpu", seed=0, status=status,
    )  # fmt: skip
    return CaseResult(**{**base, **kw})


def test_rows_round_trip(tmp_path):
    append_result(tmp_path, result(128, time_median_ms=1.5, time_samples_ms="1.4 1.5 1.6"))
    append_result(tmp_path, result(256, status="oom", reason="out of memory, at x"))
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    assert df.seq_len.tolist() == [128, 256]
    assert df.time_median_ms.iloc[0] == 1.5 and df.time_samples_ms.iloc[0] == "1.4 1.5 1.6"
    assert df.reason.tolist() == ["", "out of memory, at x"]  # empty text stays text
    keys = finished_keys(df)
    assert ("full-sdpa", '{"causal":false}', 256, "fwd", 1, 2, 16, "float32", "cpu", 0) in keys
    assert len(keys) == 2


def test_missing_and_corrupt_results_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match=r"no results\.csv"):
        read_results(tmp_path)
    (tmp_path / "results.csv").write_text("backend,seq_len\nx,1\n")
    with pytest.raises(RunFolderError, match="missing columns"):
        read_results(tmp_path)
    (tmp_path / "results.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RunFolderError):
        read_results(tmp_path)


def test_meta_round_trip_and_corrupt_meta(tmp_path):
    write_meta(tmp_path, {"torch": "2.x", "config": {"lengths": [1, 2]}})
    assert read_meta(tmp_path)["config"]["lengths"] == [1, 2]
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        read_meta(tmp_path)


def test_resume_refuses_a_file_with_other_columns(tmp_path):
    check_appendable(tmp_path)  # no file yet: fine
    (tmp_path / "results.csv").write_text("backend,family,seq_len\nx,y,1\n")
    with pytest.raises(RunFolderError, match="another version"):
        check_appendable(tmp_path)
