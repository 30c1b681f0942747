"""The run folder format: rows appended one by one, read back whole; bad folders are refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.store.records import COLUMNS, CaseResult, Status
from harness.store.storage import (
    RunFolderError,
    StorageError,
    TornRowsWarning,
    append_result,
    finished_keys,
    read_meta,
    read_results,
    rewrite_results,
    set_aside_torn,
    validate_appendable,
    write_meta,
)


def result(seq_len: int, status: str = Status.OK, **kw) -> CaseResult:
    base = dict(
        backend="full-sdpa", family="full", label="full-sdpa", params='{"causal":false}',
        seq_len=seq_len, pass_="fwd", batch=1, heads=2, head_dim=16, dtype="float32",
        device="cpu", seed=0, q_len=seq_len, kv_heads=2, documents=1, causal=False,
        inputs="gaussian", status=status,
    )  # fmt: skip
    measured = {"time_median_ms": 1.0} if status == Status.OK else {}
    return CaseResult(**{**base, **measured, **kw})


def test_rows_round_trip(tmp_path):
    append_result(tmp_path, result(128, time_median_ms=1.5, time_samples_ms="1.4 1.5 1.6"))
    append_result(tmp_path, result(256, status=Status.OOM, reason="out of memory, at x"))
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    assert df.seq_len.tolist() == [128, 256]
    assert df.time_median_ms.iloc[0] == 1.5 and df.time_samples_ms.iloc[0] == "1.4 1.5 1.6"
    assert df.reason.tolist() == ["", "out of memory, at x"]  # empty text stays text
    keys = finished_keys(df)
    # backend, params, length, mode, then the grid's axes (batch, heads, head_dim, dtype, seed,
    # q_len, kv_heads, documents, causal, inputs) and the device
    key = ("full-sdpa", '{"causal":false}', 256, "fwd", 1, 2, 16, "float32", 0, 256, 2, 1, False,
           "gaussian", "cpu")  # fmt: skip
    assert key in keys
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
    validate_appendable(tmp_path)  # no file yet: fine
    (tmp_path / "results.csv").write_text("backend,family,seq_len\nx,y,1\n")
    with pytest.raises(RunFolderError, match="another version"):
        validate_appendable(tmp_path)


def test_a_row_is_one_line_written_whole(tmp_path, monkeypatch):
    append_result(tmp_path, result(128, reason="first line\nsecond line\r\nthird"))
    text = (tmp_path / "results.csv").read_text()
    assert text.count("\n") == 2 and text.endswith("\n")  # header and one row
    assert read_results(tmp_path).reason.iloc[0] == "first line second line  third"
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    append_result(tmp_path, result(256))
    assert len(writes) == 1 and writes[0].endswith(b"\n")  # one write: never a half row


def test_a_write_that_fails_part_way_is_undone(tmp_path, monkeypatch):
    append_result(tmp_path, result(128))
    before = (tmp_path / "results.csv").read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(StorageError, match="rows before this case are intact") as info:
        append_result(tmp_path, result(256))
    assert info.value.errno == errno.ENOSPC
    assert (tmp_path / "results.csv").read_bytes() == before

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="No space left on device"):
        append_result(tmp_path, result(256))
    assert (tmp_path / "results.csv").read_bytes() == before


def torn_run(tmp_path):
    """Four rows: the second cut after its time by an old writer, which appended the third
    onto its line (the probe's "Expected 29 fields in line 4, saw 44"), and the last cut at
    the end."""
    for n in (64, 128, 256, 512):
        append_result(tmp_path, result(n, time_median_ms=1.0))
    header, r64, r128, r256, r512 = (tmp_path / "results.csv").read_text().splitlines(True)
    cut = r128[: r128.index(",1.0,") + 4]
    (tmp_path / "results.csv").write_text(header + r64 + cut + r256 + r512[:-30])
    return tmp_path


def test_readers_skip_torn_rows_and_say_so(tmp_path):
    with pytest.warns(TornRowsWarning, match=r"skipped 2 torn row\(s\) \(line 3, 4\)"):
        df = read_results(torn_run(tmp_path))  # the third row, on the second's line, too
    assert df.seq_len.tolist() == [64]


def test_resume_sets_torn_rows_aside_and_their_cases_run_again(tmp_path):
    torn_run(tmp_path)
    with pytest.warns(TornRowsWarning, match=r"set aside 2 torn row\(s\) \(line 3, 4\) into"):
        assert set_aside_torn(tmp_path) == [3, 4]
    side = (tmp_path / "results.torn").read_text()
    assert side.count("# line ") == 2 and ",128," in side and ",512," in side
    assert read_results(tmp_path).seq_len.tolist() == [64]  # no warning any more
    assert set_aside_torn(tmp_path) == []
    append_result(tmp_path, result(128))
    assert read_results(tmp_path).seq_len.tolist() == [64, 128]  # a line of its own


def test_a_run_folder_holds_one_run(tmp_path):
    append_result(tmp_path, result(128))
    append_result(tmp_path, result(256, dtype="float64"))  # a grid: two dtypes in one run
    assert read_results(tmp_path)["dtype"].tolist() == ["float32", "float64"]
    append_result(tmp_path, result(256, device="cuda"))
    with pytest.raises(RunFolderError, match=r"more than one run \(device cpu and cuda"):
        read_results(tmp_path)
    (tmp_path / "results.csv").unlink()
    append_result(tmp_path, result(128))
    append_result(tmp_path, result(128, round=2))  # measured again: the last row stands
    assert len(read_results(tmp_path)) == 2
    append_result(tmp_path, result(128))  # a second sweep's copy of round 1
    with pytest.raises(RunFolderError, match=r"full-sdpa n=128 fwd is recorded twice \(line 4\)"):
        read_results(tmp_path)


def test_a_row_appended_after_a_torn_one_starts_its_own_line(tmp_path):
    torn_run(tmp_path)  # lines 3 and 4 torn, the last without its end
    append_result(tmp_path, result(1024))
    with pytest.warns(TornRowsWarning, match=r"\(line 3, 4\)"):
        assert read_results(tmp_path).seq_len.tolist() == [64, 1024]


def test_a_corrupt_row_is_named_by_its_line_in_the_file(tmp_path):
    torn_run(tmp_path)
    append_result(tmp_path, result(1024, time_median_ms=-1.0))  # line 5, after two torn ones
    with pytest.warns(TornRowsWarning), pytest.raises(RunFolderError, match=r"line 5: time_med"):
        read_results(tmp_path)


def test_a_full_disk_under_meta_json_is_a_storage_error(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StorageError, match=r"cannot write .*meta\.json: No space left"):
        write_meta(tmp_path, {"a": 1})
    assert not (tmp_path / "meta.json").exists()


def test_a_storage_error_anywhere_is_exit_code_5_in_one_line(tmp_path, monkeypatch, capsys):
    from harness.cli import app

    def full(out_dir, meta):
        raise StorageError(errno.ENOSPC, f"cannot write {out_dir}/meta.json: No space left")

    monkeypatch.setattr("harness.store.storage.write_meta", full)
    out = tmp_path / "run"
    argv = ["--device", "cpu", "--backends", "full-sdpa", "--lengths", "64", "--out", str(out)]
    assert app.main(argv) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run_bench.py: error: cannot write"), err


def test_rows_appended_after_the_derived_columns_line_up(tmp_path):
    """A finished sweep adds derived columns; rows a resumption appends leave them empty."""
    append_result(tmp_path, result(128))
    df = read_results(tmp_path).assign(tflops=2.5, speedup_vs_full_naive=1.5)
    rewrite_results(tmp_path, df)
    validate_appendable(tmp_path)
    append_result(tmp_path, result(256))
    back = read_results(tmp_path)
    assert list(back.columns) == [*COLUMNS, "tflops", "speedup_vs_full_naive"]
    assert back["tflops"].tolist()[0] == 2.5 and pd.isna(back["tflops"].tolist()[1])
    assert back["seq_len"].tolist() == [128, 256]


def test_a_run_before_format_4_reads_as_a_grid_of_one_point(tmp_path):
    append_result(tmp_path, result(128, params='{"causal":true}'))
    old = read_results(tmp_path).drop(columns=["q_len", "kv_heads", "documents", "causal"])
    old.to_csv(tmp_path / "results.csv", index=False)
    df = read_results(tmp_path)
    row = df.iloc[0]
    assert (row.q_len, row.kv_heads, row.documents) == (128, 2, 1) and bool(row.causal)


def test_a_run_before_format_5_reads_as_gaussian_inputs_and_our_backends(tmp_path):
    append_result(tmp_path, result(128))
    old = read_results(tmp_path).drop(columns=["inputs", "implementation"])
    old.to_csv(tmp_path / "results.csv", index=False)
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS  # in their places: after causal, after yardstick
    assert (df.inputs.tolist(), df.implementation.tolist()) == (["gaussian"], ["ours"])
    assert next(iter(finished_keys(df)))[-2:] == ("gaussian", "cpu")


def test_rows_of_a_peer_on_structured_inputs_round_trip(tmp_path):
    append_result(tmp_path, result(128, inputs="structured", implementation="transformers"))
    append_result(tmp_path, result(128))  # the same case on other inputs: another case
    df = read_results(tmp_path)
    assert df.inputs.tolist() == ["structured", "gaussian"]
    assert df.implementation.tolist() == ["transformers", "ours"]
    assert len(finished_keys(df)) == 2


@pytest.mark.parametrize("value", ["", "Gaussian!", "x" * 41])
def test_an_inputs_value_that_names_no_distribution_is_refused(tmp_path, value):
    append_result(tmp_path, result(128, inputs=value))
    with pytest.raises(RunFolderError, match=r"line 2: inputs .* is not the name of an input"):
        read_results(tmp_path)
