"""Every run committed under results/ still reads, whatever format it was written in; an older
run reads with this version's names and ``upgrade`` rewrites it in this format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli.app import main
from harness.store import runs, storage
from harness.store.records import COLUMNS, FORMAT_VERSION, RENAMED_COLUMNS, RENAMED_META

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent for p in (ROOT / "results").rglob("results.csv"))


def test_there_are_committed_runs():
    assert len(COMMITTED) >= 20


@pytest.mark.parametrize("run", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_a_committed_run_loads(run: Path):
    df, meta = runs.load_run(run)
    assert not df.empty and not set(RENAMED_COLUMNS) & set(df.columns)
    assert not set(RENAMED_META) & set(meta)
    assert {"calibration_drift", "process_calibration_ms"} <= set(df.columns)


def test_upgrade_rewrites_a_format_2_run_in_this_format(tmp_path: Path):
    run = tmp_path / "run"
    # the CI baseline as saved on 2026-12-02, before format 3 renamed the calibration
    shutil.copytree(ROOT / "tests" / "fixtures" / "format-2-run", run)
    old = json.loads((run / storage.META).read_text())
    assert old["format_version"] == 2 and "reference_op" in old
    assert "process_ref_ms" in (run / storage.RESULTS).read_text().splitlines()[0]
    before = storage.read_results(run)
    assert main(["upgrade", str(run)]) == 0
    new = json.loads((run / storage.META).read_text())
    assert new["format_version"] == FORMAT_VERSION and new["calibration"] == old["reference_op"]
    assert (run / storage.RESULTS).read_text().splitlines()[0].split(",") == COLUMNS
    after = storage.read_results(run)
    assert after[before.columns].equals(before)
    assert main(["upgrade", str(run)]) == 0  # already this format: nothing to do


def test_upgrade_rewrites_a_format_4_run_with_gaussian_inputs_and_our_backends(tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(ROOT / "results" / "gqa-cpu-8q2kv-1k-4k", run)
    assert json.loads((run / storage.META).read_text())["format_version"] == 4
    header = (run / storage.RESULTS).read_text().splitlines()[0].split(",")
    assert "inputs" not in header and "implementation" not in header
    before = storage.read_results(run)  # read as format 5, without torch
    assert set(before["inputs"]) == {"gaussian"} and set(before["implementation"]) == {"ours"}
    assert main(["upgrade", str(run)]) == 0
    assert json.loads((run / storage.META).read_text())["format_version"] == FORMAT_VERSION
    header = (run / storage.RESULTS).read_text().splitlines()[0].split(",")
    assert header[: len(COLUMNS)] == COLUMNS  # then the derived columns it had
    assert storage.read_results(run)[before.columns].equals(before)
    storage.validate_appendable(run)  # a resumption can append to it now
