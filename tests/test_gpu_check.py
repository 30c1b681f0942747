"""The GPU check (``run_bench.py gpu-check``): its figures from stored rows, its summary, its
exit codes, and the whole command as CI runs it, a dry run on the CPU."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pandas as pd
import pytest

from harness.analyse import gpu_figures
from harness.analyse.published import FLASH_ATTENTION_2_FORWARD, PublishedRange
from harness.cli.app import main
from harness.cli.gpu_check import default_folder, exit_code
from harness.cli.gpu_stages import CUT_SHORT, DONE, FAILED, NOT_RUN, Stage, pytest_summary
from harness.present import gpu_check_summary
from harness.store.records import Status
from harness.store.storage import RESULTS
from tests.synthetic_runs import LONGFORMER, NAIVE, Series, write_run

K = 1024
LENGTHS = (4 * K, 8 * K, 16 * K, 32 * K)
FLASH = Series("sdpa-flash", "full", {"causal": False}, 2.0, 1.0, 1.0, 2 * 2**20)
# the same pattern, 3x faster than the plain longformer: the family's best
FLEX = replace(LONGFORMER, backend="flex-longformer", label="flex-longformer(window=256)",
               time_at_1k=LONGFORMER.time_at_1k / 3)  # fmt: skip
NAIVE_32K = replace(NAIVE, status={32 * K: Status.OOM})


def _run(tmp_path, series=(FLASH, LONGFORMER, FLEX, NAIVE_32K)) -> pd.DataFrame:
    folder = write_run(tmp_path / "run", series=series, lengths=LENGTHS, device="cuda")
    return pd.read_csv(folder / RESULTS, keep_default_na=False, na_values=[""])


def _tflops(df: pd.DataFrame, backend: str, n: int, pass_: str = "fwd") -> float:
    row = df[(df["backend"] == backend) & (df["seq_len"] == n) & (df["pass"] == pass_)].iloc[0]
    return row["flops"] / (row["time_median_ms"] / 1e3) / 1e12


def test_rate_is_useful_flops_over_the_median_with_the_quartiles_around_it(tmp_path):
    df = _run(tmp_path)
    row = df[(df["backend"] == "sdpa-flash") & (df["seq_len"] == 16 * K)].iloc[0]
    rate = gpu_figures.rate(row)
    assert rate.median == pytest.approx(_tflops(df, "sdpa-flash", 16 * K))
    assert rate.low < rate.median < rate.high
    wrong = row.copy()
    wrong["reason"] = "CHECK FAILED: max error 1 vs dense masked reference exceeds 0.06"
    assert gpu_figures.rate(wrong) is None  # a wrong answer has no rate
    oom = df[df["status"] == Status.OOM].iloc[0]
    assert gpu_figures.rate(oom) is None


def test_best_fraction_takes_the_family_s_fastest_against_sdpa_flash(tmp_path):
    df = _run(tmp_path)
    table = gpu_figures.best_fractions(df, 16 * K)
    fwd = table[(table["family"] == "longformer") & (table["pass"] == "fwd")]
    assert list(fwd["where"]) == ["at", "longest"] and list(fwd["seq_len"]) == [16 * K, 32 * K]
    for n in (16 * K, 32 * K):
        got = fwd[fwd["seq_len"] == n].iloc[0]
        assert got["backend"] == "flex-longformer(window=256)"
        expected = _tflops(df, "flex-longformer", n) / _tflops(df, "sdpa-flash", n)
        assert got["fraction"] == pytest.approx(expected)
    assert set(table["family"]) == {"longformer"}  # full attention is the yardstick, not a row
    # the faster one's answer is wrong at 16K: the plain backend is the best there
    failed = (df["backend"] == "flex-longformer") & (df["seq_len"] == 16 * K)
    df.loc[failed, "reason"] = "CHECK FAILED: max error 1"
    again = gpu_figures.best_fractions(df, 16 * K)
    at = again[(again["pass"] == "fwd") & (again["where"] == "at")].iloc[0]
    assert at["backend"] == "longformer(window=256)"


def test_memory_exponents_fit_from_the_given_length(tmp_path):
    df = _run(tmp_path)
    table = gpu_figures.memory_exponents(df, 8 * K).set_index(["label", "pass"])
    assert table.loc[("sdpa-flash", "fwd"), "fit"].slope == pytest.approx(1.0, abs=0.01)
    naive = table.loc[("full-naive", "fwd"), "fit"]  # 8K and 16K: 32K ran out of memory
    assert naive.slope == pytest.approx(2.0, abs=0.01) and naive.lengths == (8 * K, 16 * K)


def test_memory_limit_is_the_first_length_out_of_memory_or_predicted_not_to_fit(tmp_path):
    df = _run(tmp_path)
    assert gpu_figures.memory_limit(df, "full-naive") == {
        "fwd": (32 * K, "out of memory"), "fwdbwd": (32 * K, "out of memory")}  # fmt: skip
    assert gpu_figures.memory_limit(df, "sdpa-flash") == {"fwd": None, "fwdbwd": None}
    at_16k = (df["backend"] == "full-naive") & (df["seq_len"] == 16 * K) & (df["pass"] == "fwd")
    df.loc[at_16k, ["status", "reason"]] = [Status.SKIPPED, "predicted 80.0 GiB > 70.0 GiB free"]
    assert gpu_figures.memory_limit(df, "full-naive")["fwd"] == (16 * K, "predicted not to fit")


def test_published_range_places_a_measured_rate():
    fa2 = FLASH_ATTENTION_2_FORWARD[128]
    assert (fa2.low, fa2.high) == (310, 370)
    assert fa2.place(340) == "within"
    assert fa2.place(155) == "below (-50% of its low end)"
    assert PublishedRange(100, 200, "x").place(250) == "above (+25% of its high end)"


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("NVIDIA H200", "gpu-h200-bf16-1k-64k"),
        ("NVIDIA H100 80GB HBM3", "gpu-h100-80gb-hbm3-bf16-1k-64k"),
    ],
)
def test_the_folder_is_named_after_the_gpu(name, folder):
    lengths = tuple(K * 2**i for i in range(7))
    assert default_folder(name, False, "bfloat16", lengths).name == folder
    assert default_folder(name, True, "bfloat16", (128, 256)).name == "dry-run-cpu-bf16-128-256"


def test_pytest_summary_is_its_last_line():
    log = "tests/test_x.py::test_x PASSED\n=== 3 passed, 35 skipped, 900 deselected in 12.30s ==="
    assert pytest_summary(log) == "3 passed, 35 skipped, 900 deselected in 12.30s"
    assert pytest_summary(log + "\n== 1 failed, 2 passed in 200.01s (0:03:20) ==") == (
        "1 failed, 2 passed in 200.01s (0:03:20)"
    )
    assert pytest_summary("tests/test_flex.py::test_x PASSED\n") == ""  # stopped before the end


def test_exit_code_failures_before_cut_short():
    done, cut = Stage("sweep", DONE, 1.0), Stage("tests", CUT_SHORT, 1.0)
    assert exit_code([done, Stage("report", NOT_RUN, 0.0)]) == 0
    assert exit_code([done, cut]) == 3
    assert exit_code([done], timed_out_cases=1) == 3
    assert exit_code([done, cut], failed_cases=1) == 1
    assert exit_code([Stage("tests", FAILED, 1.0), cut]) == 1


def test_without_cuda_the_check_is_bad_input(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cpu" in err


def test_the_dry_run_does_every_stage_and_writes_one_folder(tmp_path, capsys):
    """CI's dry run: the command as the README gives it, with --device cpu, at one tiny length."""
    out = tmp_path / "check"
    argv = ["gpu-check", "--device", "cpu", "--lengths", "128", "--out", str(out),
            "--backends", "full-naive", "sdpa-flash", "longformer", "flex-longformer"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    state = json.loads((out / "gpu-check.json").read_text())
    stages = {s["name"]: s for s in state["attempts"][-1]["stages"]}
    assert [s["status"] for s in stages.values()] == [DONE] * 4, stages
    # the CUDA-marked tests were collected (every test module imported) and skipped here
    said = stages["tests"]["detail"]  # pytest's summary line
    assert re.match(r"\d+ skipped, \d+ deselected(, \d+ warnings?)? in ", said), said
    sweep = pd.read_csv(out / "sweep" / RESULTS)
    sweep_meta = json.loads((out / "sweep" / "meta.json").read_text())
    assert sweep_meta["config"]["case_timeout_s"] == 90.0 and sweep_meta["config"]["heads"] == [16]
    assert len(sweep) == 8 and set(sweep["seq_len"]) == {128}
    assert (out / "sweep" / "report.md").is_file()
    summary = (out / gpu_check_summary.SUMMARY).read_text()
    printed = capsys.readouterr().out.strip().splitlines()
    # last, for a lent machine's reply: the stages, the sanity rates, full-naive's limit
    assert (
        printed[-1] == "full-naive's memory limit: fwd: no limit reached; fwdbwd: no limit reached."
    )
    assert any(line.startswith("stages: sanity done") for line in printed[-6:]), printed[-6:]
    rates = [line for line in printed[-6:] if line.startswith("sdpa-flash fwd, head_dim")]
    assert len(rates) == 2 and all("TFLOP/s" in line for line in rates), rates
    assert "CPU dry run" in summary and "SDPA flash forward at 128" in summary
    sanity = pd.read_csv(out / "sanity-d128" / RESULTS).iloc[0]
    assert sanity["status"] == Status.OK and sanity["head_dim"] == 128
    assert f"{gpu_figures.rate(sanity).median:.3g} TFLOP/s" in summary
    reach = summary[summary.index("How far each backend got") :]
    for label in ("full-naive", "sdpa-flash", "longformer(window=16", "flex-longformer(window=16"):
        assert f"| {label}" in reach, label
    # a second check into the same folder is refused; --resume keeps the sanity runs
    assert main(argv) == 2
    before = (out / "sanity-d64" / RESULTS).read_text()
    assert main([*argv, "--resume", "--stages", "sanity", "report"]) == 0
    assert (out / "sanity-d64" / RESULTS).read_text() == before
    assert len(json.loads((out / "gpu-check.json").read_text())["attempts"]) == 2


def test_a_budget_too_small_for_a_stage_cuts_it_short(tmp_path, capsys):
    """140 s leaves the tests under 5 s once the report's 45 s and a last case's 90 s are kept:
    less than the 10 s they need, so they are cut short without running, and the check exits
    3, not 0."""
    out = tmp_path / "check"
    argv = ["gpu-check", "--device", "cpu", "--budget", "140", "--stages", "tests",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 3
    stages = json.loads((out / "gpu-check.json").read_text())["attempts"][-1]["stages"]
    assert [(s["name"], s["status"], s["detail"]) for s in stages] == [
        ("tests", CUT_SHORT, "not run: no time left in the budget")]  # fmt: skip
    assert not (out / "tests.log").exists()
    printed = capsys.readouterr().out
    assert "stages: tests cut short" in printed and "No sweep results" not in printed
    assert "No sweep results" in (out / "gpu-check.md").read_text()
