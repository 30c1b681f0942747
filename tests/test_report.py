import re
import shutil
from dataclasses import replace

import pytest

from harness.cli.app import main
from harness.store.records import Status
from tests.synthetic_runs import LENGTHS, NAIVE, UNSTABLE_SDPA, Series, write_run

FIGURES = ("scaling-fwd.png", "relative-fwd.png", "scaling-fwdbwd.png", "relative-fwdbwd.png")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("report") / "run")
    assert main(["report", str(run)]) == 0
    return run


def test_report_files(reported):
    for name in ("report.md", "report.html", *FIGURES):
        assert (reported / name).stat().st_size > 0, name
    md = (reported / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in md


def test_html_embeds_every_figure(reported):
    html = (reported / "report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)) == 4
    assert ".png" not in html


def test_report_holds_the_computed_numbers(reported):
    md = (reported / "report.md").read_text()
    for section in (
        "## Context",
        "## Scaling exponents",
        "## Crossover lengths",
        "## Achieved FLOP rate",
        "## Accuracy",
        "## Cases not measured",
    ):
        assert section in md
    assert "Test CPU" in md and "0123abc" in md and "run_bench.py --lengths 512 1024" in md
    assert re.search(r"\| full-naive +\| fwd +\| 2\.00 ± 0\.00 ", md)
    assert re.search(r"\| bigbird\(block_size=64\) +\| fwd .*\| 1\.50 ± 0\.00 ⚠", md)
    assert re.search(r"\| longformer\(window=256\) +\| fwd +\| full-sdpa +\| 4096 \(≈ 3072\)", md)
    assert re.search(r"\| full-naive +\| fwd +\| 16K +\| oom +\| oom at 16384", md)
    assert "O(n log n)" not in md  # no reformer in this run
    assert "not within 512–16384" in md


def test_same_report_from_a_moved_folder(reported, tmp_path):
    moved = tmp_path / "elsewhere" / reported.name
    shutil.copytree(reported, moved)
    for name in ("report.md", *FIGURES):
        (moved / name).unlink()
    assert main(["report", str(moved)]) == 0
    assert (moved / "report.md").read_text() == (reported / "report.md").read_text()


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_bad_run_folders(tmp_path, capsys):
    one_line_error(capsys, ["report", str(tmp_path / "missing")], "no such run folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["report", str(empty)], "no results.csv")
    header_only = write_run(tmp_path / "header", series=())
    (header_only / "results.csv").write_text("backend,family\n")
    one_line_error(capsys, ["report", str(header_only)], "missing columns")


def test_truncated_and_corrupt_results(tmp_path, capsys):
    run = write_run(tmp_path / "cut", passes=("fwd",))
    text = (run / "results.csv").read_text()
    rows = text.count("\n") - 1
    for cut in (len(text) // 2, text.rindex("\n", 0, len(text) - 1) + 30):  # killed mid-write
        (run / "results.csv").write_text(text[:cut])
        assert main(["report", str(run)]) == 0  # the torn last row is skipped, and said so
        err = capsys.readouterr().err
        torn = text[:cut].count("\n") + 1  # the torn row's line, 1-based
        assert f"skipped 1 torn row(s) (line {torn})" in err and err.count("\n") == 1, err
        assert torn <= rows + 1
    (run / "results.csv").write_bytes(b"\x00\xff\xfe garbage \x89")
    one_line_error(capsys, ["report", str(run)], "results.csv")
    run = write_run(tmp_path / "nometa", passes=("fwd",))
    (run / "meta.json").write_text("{not json")
    one_line_error(capsys, ["report", str(run)], "not valid JSON")


def test_usage_errors(tmp_path, capsys):
    run = str(write_run(tmp_path / "run", passes=("fwd",)))
    one_line_error(capsys, ["report"], "required")
    one_line_error(capsys, ["report", run, run, run], "one run folder, or two")
    one_line_error(capsys, ["report", run, "--out", str(tmp_path)], "--out applies")


def test_a_run_where_nothing_finished_still_reports(tmp_path):
    skipped = Series(
        "full-naive", "full", {}, 2, 1, 2, 1, status=dict.fromkeys(LENGTHS, Status.SKIPPED)
    )
    run = write_run(tmp_path / "run", series=(skipped,), passes=("fwd",))
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "No case finished." in md and "nothing to fit" in md
    assert md.count("| skipped at ") == len(LENGTHS)
    one = Series("longformer", "longformer", {}, 1, 1, 1, 1e6)
    run = write_run(tmp_path / "one", series=(one,), passes=("fwd",), lengths=(1024,))
    assert main(["report", str(run)]) == 0
    assert re.search(
        r"\| longformer +\| fwd +\| – .*\| O\(n\) +\|", (run / "report.md").read_text()
    )


def test_setup_costs_appear_when_recorded(tmp_path):
    import pandas as pd

    run = write_run(tmp_path / "run", passes=("fwd",))
    assert main(["report", str(run)]) == 0
    assert "## Setup costs" not in (run / "report.md").read_text()  # none recorded
    df = pd.read_csv(run / "results.csv")
    df["prepare_ms"], df["first_call_ms"] = 1.5, 2500.0
    df.to_csv(run / "results.csv", index=False)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Setup costs" in md and "| 1.5 ms / 2.5 s " in md


def test_times_read_without_exponents():
    from harness.present.summary import fmt_ms

    assert [fmt_ms(x, 2) for x in (396.4, 0.0581, 21000, 1.25)] == [
        "396 ms",
        "0.058 ms",
        "21 s",
        "1.2 ms",
    ]


def _time_table(md: str, pass_title: str = "forward") -> str:
    """The time table of a pass and what follows it, up to the memory table."""
    return md.split(f"## Results: {pass_title}")[1].split("Peak memory")[0]


def _row_marks(table: str, label: str) -> list[bool]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} "))
    return [cell.strip().endswith("⚠") for cell in row.split("|")[2:-1]]


def test_unstable_times_are_marked_and_explained(tmp_path):
    # the calibration ran 2x slower beside full-sdpa's 16K case than in the run
    slow = {16384: {"process_calibration_ms": "20 20"}}
    sdpa = replace(UNSTABLE_SDPA, conditions={**UNSTABLE_SDPA.conditions, **slow})
    run = write_run(tmp_path / "run", series=(NAIVE, sdpa), passes=("fwd",), calibration_ms=10.0)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    table = _time_table(md)
    assert _row_marks(table, "full-sdpa") == [False, True, False, True, False, True]
    assert _row_marks(table, "full-naive") == [False] * 6
    notes = [line for line in table.splitlines() if line.startswith("- ")]
    assert notes == [
        "- ⚠ full-sdpa at 1K: spread: the IQR of the samples is 200% of their median",
        "- ⚠ full-sdpa at 4K: busy: other processes used 50% of the CPUs",
        "- ⚠ full-sdpa at 16K: speed: the calibration ran 2x slower beside this "
        "case than at the start and end of the sweep",
    ]
    context = md.split("## Context")[1].split("## Results")[0]
    assert "⚠ beside a time" in context and "“How stable is a number”" in context
    html = (run / "report.html").read_text()
    assert "<li>⚠ full-sdpa at 4K: busy: other processes used 50% of the CPUs</li>" in html
    assert html.count(" ⚠</td>") == 3


def test_a_stable_run_has_no_mark(reported):
    for title in ("forward", "forward + backward"):
        table = _time_table((reported / "report.md").read_text(), title)
        assert "⚠" not in table.split("\n\n", 2)[2], title  # past the caption, which explains ⚠


def test_an_old_run_is_judged_on_its_spread_alone(tmp_path):
    import pandas as pd

    run = write_run(tmp_path / "old", series=(NAIVE, UNSTABLE_SDPA), passes=("fwd",))
    df = pd.read_csv(run / "results.csv", keep_default_na=False)
    df[OLD_COLUMNS].to_csv(run / "results.csv", index=False)  # as written before conditions
    assert main(["report", str(run)]) == 0
    table = _time_table((run / "report.md").read_text())
    assert _row_marks(table, "full-sdpa") == [False, True, False, False, False, False]
    assert [line for line in table.splitlines() if line.startswith("- ")] == [
        "- ⚠ full-sdpa at 1K: spread: the IQR of the samples is 200% of their median"
    ]


# the header of results.csv before the conditions of each case were recorded
OLD_COLUMNS = [
    "backend", "family", "label", "params", "seq_len", "pass", "batch", "heads", "head_dim",
    "dtype", "device", "seed", "status", "reason", "time_median_ms", "time_iqr_ms", "repeats",
    "time_samples_ms", "peak_mem_bytes", "max_err", "err_vs_full", "check_rows", "threads",
    "wall_s",
]  # fmt: skip
