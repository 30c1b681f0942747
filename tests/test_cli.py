"""The command line: bad input is one line and exit code 2; a real sweep writes a run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.app import main
from harness.records import COLUMNS
from harness.registry import backend_names

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--min-time", "0.02", "--warmup", "0.01", "--min-repeats", "3", "--heads", "2",
         "--head-dim", "16"]  # fmt: skip
SMALL_PATTERNS = ["--window", "8", "--block-size", "16", "--chunk-size", "16"]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_bench.py"), *args],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("args", [
    ["--lengths", "0"],
    ["--lengths", "-512"],
    ["--lengths", "1.5"],
    ["--lengths", "abc"],
    ["--backends", "no-such-backend"],
    ["--backends", "longformer", "--lengths", "512", "--window", "512"],
    ["--backends", "longformer", "--lengths", "512", "--global-tokens", "600"],
    ["--dtype", "float8"],
    ["--batch", "0"],
    ["--device", "tpu"],
    ["--passes", "sideways"],
    ["--frobnicate"],
    ["--causal"],  # bigbird and reformer have no causal mode
    ["--backends", "full-sdpa", "--window", "64"],  # applies to none of them
    # absurd values: refused, not hung on, run to their timeout or ended in a traceback
    ["--min-time", "inf"],
    ["--min-time", "nan"],
    ["--case-timeout", "nan"],
    ["--case-timeout", "inf"],
    ["--case-timeout", "1e10"],
    ["--threads", "100000000000"],
    ["--warmup", "1e9"],
    ["--warmup", "200", "--case-timeout", "100"],
    ["--seed", str(2**64)],
    ["--seed", "-1"],
    ["--processes", "100000"],
    ["--min-repeats", "1e3"],
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(args, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run_bench.py: error: ") and err.count("\n") == 1, err


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
        assert f"| {name} " in proc.stdout


def test_sweep_end_to_end_then_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--lengths", "64", "100", "--out", str(out), *QUICK, *SMALL_PATTERNS]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == len(backend_names()) * 2 * 2
    # every backend ran, except kernels this machine lacks, which say why
    ran = df.status == "ok"
    lacking = (df.status == "skipped") & df.backend.str.startswith(("sdpa-", "xformers-", "flex-"))
    assert (ran | lacking).all(), df[["backend", "status", "reason"]]
    assert (df.reason[lacking].str.len() > 20).all()
    assert {"full-naive", "full-sdpa", "longformer", "bigbird", "reformer"} <= set(df.backend[ran])
    assert (df.max_err[ran] < 1e-4).all()
    meta = json.loads((out / "meta.json").read_text())
    for key in ("torch", "python", "device_name", "threads", "git_commit", "command", "created"):
        assert key in meta
    assert meta["config"]["backends"]["longformer"]["window"] == 8
    assert meta["reference_op"]["before"]["median_ms"] > 0 and "after" in meta["reference_op"]
    for name in backend_names():
        assert name in proc.stdout  # the summary table

    again = run_cli(*args)  # the folder holds results: refused without --resume
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_cli("--out", str(out), *QUICK, "--resume", "--backends", "full-sdpa",
                      "--lengths", "64", "128", "--report")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    df2 = pd.read_csv(out / "results.csv")
    assert len(df2) == len(df) + 2  # only full-sdpa at 128, fwd and fwdbwd
    # --report: the report of the whole run, written into it
    for name in ("report.md", "report.html", "scaling-fwd.png", "relative-fwdbwd.png"):
        assert (out / name).stat().st_size > 0, name
    assert "full-sdpa" in (out / "report.md").read_text()
