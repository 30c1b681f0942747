"""The command line: bad input is one line and exit code 2; a real sweep writes a run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.cli.app import main
from harness.measure.registry import backend_names, get_backend_class
from harness.store.records import COLUMNS, Status

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--min-time", "0.02", "--warmup", "0.01", "--min-repeats", "3", "--heads", "2",
         "--head-dim", "16"]  # fmt: skip
SMALL_PATTERNS = ["--window", "8", "--block-size", "16", "--chunk-size", "16"]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_bench.py"), *args],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip


# Bad command lines: tests/test_fuzz.py, BAD_COMMAND_LINES


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(capsys, tmp_path):
    assert main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--out", str(blocker / "run")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_bad_input_from_a_real_process_has_no_traceback():
    proc = run_cli("--lengths", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_list_backends_names_every_backend():
    proc = run_cli("--list-backends")
    assert proc.returncode == 0, proc.stderr
    for name in backend_names():
        assert any(line.startswith(f"{name} ") for line in proc.stdout.splitlines()), name


def test_sweep_end_to_end_then_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--lengths", "64", "100", "--out", str(out), *QUICK, *SMALL_PATTERNS]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns)[: len(COLUMNS)] == COLUMNS  # derived columns may follow
    assert len(df) == len(backend_names()) * 2 * 2
    # every backend ran, except kernels this machine lacks and peers whose own limits (or
    # missing package) refuse these small cases, which say why
    ran = df.status == Status.OK
    peer = df.backend.map(lambda name: get_backend_class(name).implementation != "ours")
    lacking = (df.status == Status.SKIPPED) & (
        df.backend.str.startswith(("sdpa-", "xformers-", "flex-")) | peer
    )
    assert (ran | lacking).all(), df[["backend", "status", "reason"]]
    assert (df.reason[lacking].str.len() > 20).all()
    assert {"full-naive", "full-sdpa", "longformer", "bigbird", "reformer"} <= set(df.backend[ran])
    assert (df.max_err[ran] < 1e-4).all()
    meta = json.loads((out / "meta.json").read_text())
    for key in ("torch", "python", "device_name", "threads", "git_commit", "command", "created"):
        assert key in meta
    assert meta["config"]["backends"]["longformer"]["window"] == 8
    assert meta["calibration"]["before"]["median_ms"] > 0 and "after" in meta["calibration"]
    for name in backend_names():
        assert name in proc.stdout  # the summary table

    again = run_cli(*args)  # the folder holds results: refused without --resume
    assert again.returncode == 2 and "--resume" in again.stderr
    # a run folder holds one run: resuming with other options is refused, naming them
    other = run_cli("--out", str(out), *QUICK, *SMALL_PATTERNS, "--resume", "--lengths", "64",
                    "128", "--dtype", "float64")  # fmt: skip
    assert other.returncode == 2 and len(other.stderr.splitlines()) == 1, other.stderr
    assert "--lengths 64 128 (the run has 64 100)" in other.stderr
    assert "--dtype float64 (the run has float32)" in other.stderr
    # an interrupted run (its last three cases missing): '--resume --out RUN' alone completes
    # it with the run's own options
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]))
    resumed = run_cli("--out", str(out), "--resume", "--report")
    assert resumed.returncode == 0, resumed.stderr
    df2 = pd.read_csv(out / "results.csv")
    key = ["backend", "seq_len", "pass"]
    assert len(df2) == len(df) and not df2.duplicated(key).any()
    assert set(map(tuple, df2[key].to_numpy())) == set(map(tuple, df[key].to_numpy()))
    assert len(json.loads((out / "meta.json").read_text())["resumed"]) == 1
    # --report: the report of the whole run, written into it
    for name in ("report.md", "report.html", "scaling-fwd.png", "relative-fwdbwd.png"):
        assert (out / name).stat().st_size > 0, name
    assert "full-sdpa" in (out / "report.md").read_text()
