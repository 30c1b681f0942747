"""The verdict table ``compare`` prints: the verdict first, the cases that need attention first,
no line wider than 120 columns however long the labels and reasons, and every cell still there;
compare.md keeps its columns and the run's order."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd
import pytest

from harness.analyse.rules import CompareSettings, Verdict
from harness.cli.app import main
from harness.present import text_table, verdicts
from harness.store.records import Status
from tests.synthetic_runs import LONGFORMER, NAIVE, SDPA, write_run

WIDTH = 120
# a label of many parameters, and reasons of several unstable conditions on both sides
LONG_LABEL = replace(
    LONGFORMER,
    label="longformer(window=256, dilation=4, global_tokens=[0, 1, 2, 3, 511, 1023, 2047], "
    "causal=True, implementation=a-very-long-kernel-name-without-any-spaces-in-it-at-all)",
    conditions={n: {"other_cpu": 0.81, "steal": 0.09} for n in (1024, 2048)},
)


def _runs(tmp_path):
    """Baseline and new run; in the new one full-naive (listed last) newly times out at 8K."""
    base = write_run(tmp_path / "base", series=(SDPA, LONG_LABEL, NAIVE))
    failing = replace(NAIVE, status={8192: Status.TIMEOUT, 16384: Status.OOM})
    new = write_run(tmp_path / "new", series=(SDPA, LONG_LABEL, failing), scale=1.3)
    return base, new


def _table_lines(out: str) -> list[str]:
    """The printed table: from its header to the blank line before the counts."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("verdict "))
    end = lines.index("", start)
    return lines[start:end]


def _rows(table_lines: list[str]) -> list[dict[str, str]]:
    """Each printed row's cells, the wrapped pieces of each joined without spaces; the columns'
    spans are those of the rule under the header; a reason printed under its case ("why: ...",
    to the end of the row's lines) is its "why"."""
    spans = [m.span() for m in re.finditer(r"-+", table_lines[1])]
    names = [table_lines[0][a:b].strip() for a, b in spans]
    rows: list[dict[str, str]] = []
    under = False
    for line in table_lines[2:]:
        if line[:1].strip():  # a row starts with its verdict; its other lines leave it blank
            rows.append(dict.fromkeys([*names, "why"], ""))
            under = False
        if line.strip().startswith("why: ") and "why" not in names:
            under, line = True, line.strip().removeprefix("why: ")
        if under:
            rows[-1]["why"] += line.replace(" ", "")
            continue
        for name, (a, b) in zip(names, spans, strict=True):
            rows[-1][name] += line[a:b].replace(" ", "")
    return rows


def _squeezed(text: object) -> str:
    return str(text).replace(" ", "")


@pytest.mark.parametrize("extra", [[], ["--strict"], ["--normalise", "--strict"]])
def test_printed_table_fits_120_columns_and_puts_regressions_first(tmp_path, capsys, extra):
    base, new = _runs(tmp_path)
    if "--normalise" in extra:
        for run in (base, new):
            meta = run / "meta.json"
            meta.write_text(meta.read_text().replace('"device": "cpu"', '"device": "cpu", '
                            '"calibration": {"before": {"median_ms": 10.0}, '
                            '"after": {"median_ms": 10.0}}', 1))  # fmt: skip
    assert main(["compare", str(base), str(new), *extra]) == 1
    out = capsys.readouterr().out
    table = pd.read_csv(new / "compare.csv")
    assert (table["why"].str.len() > WIDTH).any()  # reasons that had to wrap
    lines = _table_lines(out)
    # the legend and the table (the lines after them name paths of any length)
    printed = out.splitlines()[: out.splitlines().index(lines[-1]) + 1]
    too_wide = [line for line in printed if len(line) > WIDTH]
    assert too_wide == [], too_wide
    assert lines[0].split()[:4] == ["verdict", "backend", "pass", "n"]
    rows = _rows(lines)
    shown = [r["verdict"] for r in rows]
    assert len(shown) == len(table)
    regressed = int((table["verdict"] == "regressed").sum())
    assert regressed >= 2 and shown[:regressed] == ["regressed"] * regressed
    if not extra:  # the two newly failing cases, listed last in the run, are printed first
        assert [(r["backend"], r["n"]) for r in rows[:2]] == [("full-naive", "8K")] * 2
        assert table["verdict"].iloc[0] != "regressed"
    rank = [verdicts.ATTENTION.index(Verdict(v)) for v in shown]
    assert rank == sorted(rank)
    # nothing cut: every label and reason is printed whole, wrapped
    printed = sorted((r["backend"], r["why"]) for r in rows)
    stored = sorted(
        (_squeezed(b), _squeezed(w)) for b, w in zip(table["backend"], table["why"], strict=True)
    )
    assert printed == stored


def test_within_a_verdict_the_runs_order_stays():
    table = pd.DataFrame({"verdict": ["same", "regressed", "faster", "same", "regressed",
                                      "missing", "new", "inconclusive", "slower", "unmeasured",
                                      "fixed"],
                          "case": range(11)})  # fmt: skip
    ordered = verdicts.by_attention(table)
    assert list(ordered["verdict"]) == ["regressed", "regressed", "inconclusive", "slower",
                                        "unmeasured", "fixed", "faster", "same", "same", "new",
                                        "missing"]  # fmt: skip
    assert list(ordered["case"]) == [1, 4, 7, 8, 9, 10, 2, 0, 3, 6, 5]


def test_compare_md_keeps_its_columns_and_the_runs_order(tmp_path, capsys):
    base, new = _runs(tmp_path)
    main(["compare", str(base), str(new), "--metric", "wall"])
    capsys.readouterr()
    md = (new / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| backend"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "backend", "pass", "n", "baseline (wall time)", "new (wall time)", "ratio (wall time)",
        "memory new", "verdict", "why",
    ]  # fmt: skip
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| full-sdpa ")  # the run's order, not the verdicts'
    assert sum(" regressed " in r for r in rows) == 2


def _compared(backend: list[str], why: list[str]) -> pd.DataFrame:
    """A comparison table (``regression.compare_runs``'s columns) of these cases, all regressed."""
    n = len(why)
    return pd.DataFrame(
        {"backend": backend, "pass": ["fwd"] * n, "seq_len": [1024] * n,
         "status_base": [Status.OK] * n, "status_new": [Status.OK] * n,
         "time_base_ms": [1.0] * n, "time_new_ms": [2.0] * n,
         "time_ratio": [2.0] * n, "memory_new": [2**20] * n, "verdict": ["regressed"] * n,
         "why": why}
    )  # fmt: skip


BUSY_WHY = ("time +21% (p=0.0012, 7 vs 7 CPU-time process medians, per-case calibration); "
            "new: busy: other processes used 81% of the CPUs; baseline: drift: the reference "
            "operation changed by 60% across the case")  # fmt: skip


def test_the_terminal_shows_the_cells_of_compare_md():
    table = _compared(["b" * 150], ["x " * 300])
    settings = CompareSettings(metric="cpu", normalise=True)
    text = verdicts.terminal_table(table, settings)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    legend, body = text.split("\n\n")
    [row] = _rows(body.splitlines())
    assert row["backend"] == "b" * 150 and row["why"] == "x" * 300 and row["ratio"] == "2×"
    assert "CPU time" in legend and "normalised" in legend
    md = verdicts.display_table(table, settings)
    assert list(md.columns)[3] == "baseline (CPU time)"


def test_short_reasons_stay_in_their_column_and_long_ones_go_under_their_case():
    short = _compared(["full-sdpa", "longformer(window=256)"], ["ok -> timeout", "memory +9%"])
    body = verdicts.terminal_table(short).split("\n\n")[1].splitlines()
    assert body[0].split()[-1] == "why" and len(body) == 4  # header, rule, a line per case
    labels = ["longformer(window=256, dilation=2, global_tokens=[0, 511])", "full-naive"]
    long = _compared(labels, [BUSY_WHY, BUSY_WHY + "; " + BUSY_WHY])
    body = verdicts.terminal_table(long).split("\n\n")[1].splitlines()
    assert "why" not in body[0].split()
    # under the case, from where the backend column starts
    assert body[3].startswith(" " * body[0].index("backend") + "why: time +21% (p=0.0012,")
    assert max(len(line) for line in body) <= WIDTH
    assert [r["why"] for r in _rows(body)] == [_squeezed(w) for w in long["why"]]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_fit_never_exceeds_the_width(width):
    table = pd.DataFrame({"a": ["short", "x" * 300], "b": ["word " * 50, ""], "c": ["1", "22"]})
    for wrap in ((), ("b",), ("a", "b")):
        lines = text_table.fit(table, width, right=("c",), wrap=wrap).splitlines()
        assert max(len(line) for line in lines) <= width
        assert "".join(lines).count("x") == 300 and "".join(lines).count("word") == 50


def test_fit_leaves_a_table_that_fits_alone():
    table = pd.DataFrame({"name": ["a", "bb"], "value": ["1", "22"]})
    assert text_table.fit(table, 120, right=("value",)) == (
        "name  value\n----  -----\na         1\nbb       22"
    )


def test_wrapped_lines_counts_as_textwrap_does():
    for text in ("time +21% (p=0.0012, 7 vs 7 CPU-time process medians, per-case calibration)",
                 "a" * 30 + " b c", ""):  # fmt: skip
        for width in (12, 20, 31, 80):
            lines, broken = text_table.wrapped_lines(text, width)
            assert lines == len(text_table._wrap(text, width))
            assert broken == sum(len(w) > width for w in text.split())
