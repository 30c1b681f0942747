"""Bad input of every kind gets one line on stderr and exit code 2, quickly, never a traceback:
each corrupt run folder of ``tests/corrupt_runs.py`` through every command that reads a run,
and a list of bad or absurd command lines.

The in-process runs replace the measuring (case processes, the calibration matmul, the machine's
conditions) with stubs, so that a resume that is rightly accepted costs nothing, and the
figures of a run that is rightly read with empty ones (drawing them took seconds each on the
2-core VM; test_plots and test_report draw real ones): the validation is the real one. Two
corruptions also go through a real process of ``run_bench.py``, to show that nothing reaches
the terminal but the one line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from harness.cli import app
from harness.present import plots
from harness.store.records import Status
from harness.sweep import runner
from tests import corrupt_runs
from tests.corrupt_runs import COMMANDS, CORRUPTIONS, VALID_OPTIONS, Corruption

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 10.0
PREFIX = "run_bench.py: "
# what a run that is read rightly may print on stderr besides its result
ALLOWED_NOTES = (
    "sweep: ",  # a resume names its cases
    f"{PREFIX}warning: ",  # e.g. compare: too few processes for a significance test
    f"{PREFIX}inconclusive: ",  # compare with --allow-inconclusive
)
TORN_WARNING = "torn row"  # the readers' warning for a row they skip or resume sets aside
TIMES: dict[str, float] = {}  # invocation -> seconds, for the slowest one's report


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """No case process, calibration matmul or conditions window: a resume that is accepted
    records an error row per case instead of measuring it."""
    monkeypatch.setattr(runner, "_context", lambda preload=(): None)
    monkeypatch.setattr(
        runner,
        "run_in_process",
        lambda ctx, case, timeout_s, threads: {"status": Status.ERROR, "reason": "fuzz test stub"},
    )
    monkeypatch.setattr(app.calibration, "time_calibration", lambda *a, **k: {"median_ms": 1.0})
    monkeypatch.setattr(app.conditions, "snapshot", lambda *a, **k: {"other_cpu": 0.0})
    monkeypatch.setattr(app, "_progress", lambda cases: cases)
    for name in ("scaling_figure", "relative_figure", "ratio_figure"):
        monkeypatch.setattr(plots, name, lambda *a, **k: Figure(figsize=(1, 1)))
    monkeypatch.setattr(plots, "save", lambda fig, path: fig.savefig(path, dpi=10) or path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # baseline save writes under results/baselines of the cwd
    return tmp_path


def argv_for(command: str, run: Path, good: Path) -> list[str]:
    return {
        "report": ["report", str(run)],
        "report-pair": ["report", str(good), str(run), "--out", str(run.parent / "pair")],
        "compare-new": ["compare", str(good), str(run), "--out", str(run.parent / "cmp"),
                        "--allow-inconclusive"],
        "compare-base": ["compare", str(run), str(good), "--out", str(run.parent / "cmp"),
                         "--allow-inconclusive"],
        "baseline": ["baseline", "save", str(run), "fuzz"],
        "resume": [*VALID_OPTIONS, "--resume", "--out", str(run)],
    }[command]  # fmt: skip


def invoke(argv: list[str], capsys) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.perf_counter()
    code = app.main(argv)
    seconds = time.perf_counter() - start
    return code, capsys.readouterr().err, seconds


def check_refused(code: int, err: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}, stderr {err!r}"
    assert err.startswith(f"{PREFIX}error: ") and err.count("\n") == 1, f"{what}: {err!r}"
    assert "Traceback" not in err


def check_read(code: int, err: str, what: str, warning: str | None = None) -> None:
    assert code == 0, f"{what}: exit {code}, stderr {err!r}"
    lines = err.splitlines()
    assert all(line.startswith(ALLOWED_NOTES) for line in lines), f"{what}: {err!r}"
    if warning:
        assert any(warning in line for line in lines), f"{what}: no warning {warning!r}: {err!r}"


def check_outcome(c: Corruption, command: str, code: int, err: str) -> None:
    what = f"{c.name} ({c.what}), {command}"
    if command in c.readable:
        check_read(code, err, what)
    elif c.torn and code == 0:  # a reader that skips a torn row with a warning
        check_read(code, err, what, warning=TORN_WARNING)
    else:
        check_refused(code, err, what)


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=[c.name for c in CORRUPTIONS])
def test_corrupt_run_folder(corruption: Corruption, stubbed: Path, capsys):
    reason = corruption.unavailable()
    if reason:
        pytest.skip(reason)
    good = corrupt_runs.valid_copy(stubbed)
    problems = []
    for command in COMMANDS:
        # a fresh copy each time: a command that reads the run rightly may write into it
        run = corrupt_runs.build(corruption.name, stubbed / command)
        code, err, seconds = invoke(argv_for(command, run, good), capsys)
        TIMES[f"{corruption.name} {command}"] = seconds
        try:
            check_outcome(corruption, command, code, err)
            assert seconds < LIMIT_S, f"{corruption.name}, {command}: {seconds:.1f} s"
        except AssertionError as exc:  # every command's outcome, not only the first wrong one
            problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)


def test_the_corpus_is_large_and_described():
    assert len(CORRUPTIONS) >= 60
    for c in CORRUPTIONS:
        assert c.what and "\n" not in c.what, c.name


def test_corrupt_runs_through_real_processes(tmp_path: Path):
    """Side by side, to take the time of one start of Python, torch and pandas."""
    names = ["meta-nested-lists", "seq-len-1e23"]
    procs = []
    for name in names:
        run = corrupt_runs.build(name, tmp_path)
        command = [sys.executable, str(ROOT / "run_bench.py"), "report", str(run)]
        procs.append((name, time.perf_counter(), subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )))  # fmt: skip
    for name, start, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert time.perf_counter() - start < 2 * LIMIT_S  # two starts share the CPUs
        check_refused(proc.returncode, err, name)
        assert "Traceback" not in out


# {good}: a readable run; {tmp}: an empty folder. A sweep's line gets "--out {tmp}/run" unless
# it names its own --out. Every one must be refused before anything is measured.
S = ["--device", "cpu"]
BAD_COMMAND_LINES: list[list[str]] = [
    # lengths
    ["--lengths", "0"], ["--lengths", "-512"], ["--lengths", "1.5"], ["--lengths", "abc"],
    ["--lengths", "1e3"], ["--lengths", "nan"], ["--lengths", ""], ["--lengths"],
    ["--lengths", "10000000", "--backends", "full-sdpa", *S],  # inputs exceed the memory
    ["--lengths", str(2**24 + 1)], ["--lengths", "9" * 30], ["--lengths", "9" * 5000],
    ["--lengths", *map(str, range(64, 64 + 257))],  # 257 lengths
    ["--lengths", "64", "--batch", "65535", "--heads", "65535", *S],
    # shape
    ["--batch", "0"], ["--batch", "-1"], ["--batch", "65536"], ["--batch", "1e9"],
    ["--heads", "0"], ["--heads", "100000"], ["--heads", "two"],
    ["--head-dim", "0"], ["--head-dim", "4097"], ["--head-dim", "64.5"],
    ["--check-rows", "0"], ["--check-rows", str(2**24 + 1)], ["--check-rows", "-3"],
    ["--seed", str(2**64)], ["--seed", "-1"], ["--seed", "x"],
    # backends and their parameters
    ["--backends", "no-such-backend"], ["--backends"], ["--backends", ""],
    ["--backends", "longformer", "--lengths", "512", "--window", "512"],
    ["--backends", "longformer", "--lengths", "512", "--window", "100000000000000000000"],
    ["--backends", "longformer", "--lengths", "512", "--window", "0"],
    ["--backends", "longformer", "--lengths", "512", "--global-tokens", "600"],
    ["--backends", "longformer", "--lengths", "512", "--global-tokens", "-513"],
    ["--backends", "longformer", "--lengths", "512", "--global-tokens", "1e30"],
    ["--backends", "longformer", "--lengths", "512", "--global-tokens", "9" * 40],
    ["--backends", "longformer", "--lengths", "4096", "--window", "8", "--global-tokens",
     *map(str, range(1025))],  # 1025 global tokens
    ["--backends", "longformer", "--lengths", "512", "--window", "8",
     "--dilation", "100000000000000000000"],
    ["--backends", "longformer", "--lengths", "512", "--window", "8", "--dilation", "64"],
    ["--backends", "longformer", "--lengths", "512", "--dilation", "0"],
    ["--backends", "bigbird", "--lengths", "1024", "--random-blocks", "1000000000"],
    ["--backends", "bigbird", "--lengths", "1024", "--random-blocks", "-1"],
    ["--backends", "bigbird", "--lengths", "1024", "--global-blocks", "1000000000"],
    ["--backends", "bigbird", "--lengths", "1024", "--global-blocks", "-2"],
    ["--backends", "bigbird", "--lengths", "1024", "--block-size", "2048"],
    ["--backends", "bigbird", "--lengths", "1024", "--block-size", "0"],
    ["--backends", "bigbird", "--lengths", "1024", "--random-blocks", "x"],
    ["--backends", "reformer", "--lengths", "1024", "--buckets", "2000000000"],
    ["--backends", "reformer", "--lengths", "1024", "--buckets", "7"],
    ["--backends", "reformer", "--lengths", "1024", "--hashes", "1000000"],
    ["--backends", "reformer", "--lengths", "1024", "--hashes", "0"],
    ["--backends", "reformer", "--lengths", "1024", "--chunk-size", "2000000000"],
    ["--backends", "reformer", "--lengths", "1024", "--chunk-size", "1"],
    ["--backends", "bigbird", "--causal"],  # none of them has a causal variant
    ["--causal", "maybe"], ["--modes", "sideways"], ["--q-len", "0"], ["--documents", "0"],
    ["--heads", "4", "6", "--kv-heads", "4"],  # 4 key/value heads cannot serve 6 query heads
    ["--lengths", "64", "--q-len", "65"], ["--lengths", "64", "--documents", "65"],
    ["--config", "/nonexistent/sweep.toml"],
    ["--backends", "full-sdpa", "--window", "64"],  # applies to none of them
    ["--backends", "full-sdpa", "--no-shared-qk"],
    # device, dtype, passes, unknown flags
    ["--dtype", "float8"], ["--dtype", ""], ["--device", "tpu"], ["--device", ""],
    ["--device", "cuda:99"], ["--device", "cpu:x"], ["--passes", "sideways"], ["--passes"],
    ["--frobnicate"], ["-x"], ["--lengths=64=128"], ["report-card"],
    # measurement: absurd values refused, not hung on, run to their timeout or a traceback
    ["--min-time", "inf"], ["--min-time", "nan"], ["--min-time", "0"], ["--min-time", "-1"],
    ["--case-timeout", "nan"], ["--case-timeout", "inf"], ["--case-timeout", "1e10"],
    ["--threads", "100000000000"], ["--threads", "0"], ["--warmup", "1e9"],
    ["--warmup", "200", "--case-timeout", "100"], ["--processes", "100000"],
    ["--processes", "0"], ["--min-repeats", "1e3"], ["--min-repeats", "0"],
    ["--remeasure", "6"], ["--remeasure", "-1"], ["--rechecks", "6"],
    # output
    ["--out", ""], ["--out", " "], ["--out", "{good}/results.csv"], ["--out", "{good}"],
    ["--out", "/proc/no-such/run"], ["--resume", "--out", "{good}/meta.json"],
    # the regression check's options
    ["--time-tolerance", "abc"], ["--time-tolerance", "-5%"], ["--memory-tolerance", "nan"],
    ["--metric", "instructions"], ["--compare-to", "no-such-baseline"],
    ["--compare-to", "../escape"], ["--compare-to", ""], ["--check-against", ""],
    # report
    ["report"], ["report", "{tmp}/missing"], ["report", "{good}", "{good}", "{good}"],
    ["report", "{good}", "--out", "{tmp}/x"], ["report", "{good}/results.csv"],
    ["report", "{tmp}"], ["report", "{good}", "{good}", "--out", ""],
    ["report", "{good}", "{good}", "--out", "{good}/results.csv"],
    ["report", "{good}", "{good}", "--out", "/proc/no-such/x"], ["report", "--frobnicate"],
    ["report", ""],
    # compare
    ["compare"], ["compare", "{good}"], ["compare", "{good}", "{tmp}/missing"],
    ["compare", "{tmp}", "{good}"], ["compare", "{good}", "{good}", "--out", ""],
    ["compare", "{good}", "{good}", "--out", "{good}/results.csv"],
    ["compare", "{good}", "{good}", "--out", "/proc/no-such/x"],
    ["compare", "{good}", "{good}", "--time-tolerance", "x"],
    ["compare", "{good}", "{good}", "--time-tolerance", "inf"],
    ["compare", "{good}", "{good}", "--memory-tolerance", "-1"],
    ["compare", "{good}", "{good}", "--metric", "x"],
    ["compare", "{good}", "{good}", "--normalise", "--metric", "cpu", "--strict", "extra"],
    # baseline
    ["baseline"], ["baseline", "load", "{good}", "x"], ["baseline", "save"],
    ["baseline", "save", "{good}"], ["baseline", "save", "{tmp}/missing", "x"],
    ["baseline", "save", "{good}", ""], ["baseline", "save", "{good}", "../up"],
    ["baseline", "save", "{good}", "a/b"], ["baseline", "save", "{good}", "x" * 300],
    ["baseline", "save", "{good}", "name\n"], ["baseline", "save", "{tmp}", "x"],
]  # fmt: skip
COMMAND_WORDS = ("report", "compare", "baseline")


def _fill(args: list[str], good: Path, tmp: Path) -> list[str]:
    filled = [a.replace("{good}", str(good)).replace("{tmp}", str(tmp)) for a in args]
    if (filled[:1] and filled[0] in COMMAND_WORDS) or "--out" in filled:
        return filled
    return [*filled, "--out", str(tmp / "run")]


def test_the_command_lines_are_many():
    assert len(BAD_COMMAND_LINES) >= 100


@pytest.mark.parametrize("args", BAD_COMMAND_LINES, ids=lambda a: " ".join(a)[:60])
def test_bad_command_line_is_one_line_and_exit_code_2(args, stubbed: Path, capsys):
    good = corrupt_runs.valid_copy(stubbed)
    empty = stubbed / "empty"
    empty.mkdir()
    code, err, seconds = invoke(_fill(args, good, empty), capsys)
    TIMES[" ".join(args)[:60]] = seconds
    check_refused(code, err, " ".join(args)[:80])
    assert seconds < LIMIT_S, seconds
