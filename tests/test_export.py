"""``export RUN_DIR``: a run as JSON that pandas reads in one line, with the derived figures
(TFLOP/s, speedups, memory savings) already in it; and ``--list-backends --format json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.app import main
from harness.store.records import Status
from harness.store.storage import RESULTS
from tests.synthetic_runs import SERIES, write_grid_run, write_run


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", series=SERIES)


def test_pandas_reads_the_export_in_one_line_with_the_derived_figures(run, capsys):
    assert main(["export", str(run)]) == 0
    assert f"export: {run / 'results.json'}" in capsys.readouterr().out
    cases = pd.read_json(run / "results.json")  # the one line
    stored = pd.read_csv(run / RESULTS)
    assert len(cases) == len(stored)
    assert set(stored.columns) <= set(cases.columns)
    ok = cases[cases["status"] == Status.OK]
    expected = ok["flops"] / (ok["time_median_ms"] / 1e3) / 1e12
    assert ok["tflops"].to_numpy() == pytest.approx(expected.to_numpy())
    # against each full-attention yardstick, at the same pass and length
    key = ["pass", "seq_len"]
    lf = ok[ok["backend"] == "longformer"].set_index(key)
    for yardstick in ("full-naive", "full-sdpa"):
        ref = ok[ok["backend"] == yardstick].set_index(key)
        both = lf.index.intersection(ref.index)
        assert len(both) > 0
        speedup = ref.loc[both, "time_median_ms"] / lf.loc[both, "time_median_ms"]
        got = lf.loc[both, f"speedup_vs_{yardstick}"]
        assert got.to_numpy() == pytest.approx(speedup.to_numpy())
        saving = ref.loc[both, "peak_mem_bytes"] / lf.loc[both, "peak_mem_bytes"]
        assert lf.loc[both, f"memory_saving_vs_{yardstick}"].to_numpy() == pytest.approx(
            saving.to_numpy()
        )
    assert set(cases["run_device_name"]) == {"Test CPU"}
    assert set(cases["run_git_commit"]) == {"0123abc"}


def test_what_does_not_exist_is_null(run):
    assert main(["export", str(run), "--out", str(run / "x.json")]) == 0
    cases = json.loads((run / "x.json").read_text())  # strict JSON: no NaN
    oom = [c for c in cases if c["status"] == Status.OOM]
    assert oom and all(c["tflops"] is None and c["time_median_ms"] is None for c in oom)
    # full-naive ran out of memory at 16K: nothing there to compare with
    at_16k = [c for c in cases if c["backend"] == "longformer" and c["seq_len"] == 16384]
    assert at_16k and all(c["speedup_vs_full-naive"] is None for c in at_16k)
    assert all(c["speedup_vs_full-sdpa"] is not None for c in at_16k)


def test_export_of_no_run_is_bad_input(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_list_backends_as_json():
    out = subprocess.run(
        [sys.executable, "run_bench.py", "--list-backends", "--format", "json", "--device", "cpu"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    listed = json.loads(out.stdout)
    names = [b["backend"] for b in listed]
    assert {"full-naive", "longformer", "bigbird", "reformer"} <= set(names)
    naive = listed[names.index("full-naive")]
    assert (naive["runs_here"], naive["device"], naive["dtype"]) == ("yes", "cpu", "float32")
    assert all(set(b) >= {"why_not", "defaults", "family"} for b in listed)


def test_format_without_list_backends_is_bad_input(capsys):
    assert main(["--format", "json"]) == 2
    assert "--format applies to --list-backends" in capsys.readouterr().err


def test_a_grid_run_exports_a_case_per_point_with_its_axes(tmp_path):
    run = write_grid_run(tmp_path / "grid")
    assert main(["export", str(run)]) == 0
    cases = pd.read_json(run / "results.json")  # the one line
    assert len(cases) == len(pd.read_csv(run / RESULTS))
    assert {"head_dim", "causal", "q_len", "kv_heads", "documents", "tflops",
            "speedup_vs_full-sdpa"} <= set(cases.columns)  # fmt: skip
    key = ["pass", "seq_len", "head_dim", "causal"]
    ok = cases[cases["status"] == Status.OK]
    sdpa = ok[ok["backend"] == "full-sdpa"].set_index(key)["time_median_ms"]
    lf = ok[ok["backend"] == "longformer"]
    expected = sdpa.reindex(pd.MultiIndex.from_frame(lf[key])).to_numpy() / lf["time_median_ms"]
    assert lf["speedup_vs_full-sdpa"].to_numpy() == pytest.approx(expected.to_numpy())
