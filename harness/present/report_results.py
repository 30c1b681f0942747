"""The results sections of a report: per pass, the time and memory tables and the figures; for a
grid run, per pass the figures with a panel per point of the grid and a subsection of tables per
point (a facet), and the fastest backend per point and length."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analyse import grid, stability
from harness.present import plots
from harness.present.document import Block, Bullets, Heading, Image, Table, Text
from harness.present.facet_figures import facet_figure, speedups
from harness.present.facets import facet_title
from harness.present.grid_tables import best_table
from harness.present.report_tables import metric_table, unstable_notes


def _time_table(rows: pd.DataFrame, pass_: str, run_calibration: float | None) -> Table:
    return Table(
        metric_table(rows, pass_, "time", run_calibration),
        "Median time ± interquartile range over the repeats; a status where the case "
        f"did not finish; {stability.MARK} a time that may not be believed (why: below).",
    )


def _memory_table(rows: pd.DataFrame, pass_: str) -> Table:
    return Table(
        metric_table(rows, pass_, "memory"),
        "Peak memory beyond the inputs (on CPU: resident-set high-water mark; on CUDA: "
        "allocator peak).",
    )


RELATIVE_NOTE = (
    "Above 1× a backend is faster (or needs less memory) than the reference; "
    "the full-attention references are exact, the sparse backends are not."
)


def pass_results(
    run_dir: Path, df: pd.DataFrame, pass_: str, refs: dict[str, pd.DataFrame], sub: str,
    styles: plots.Styles, run_calibration: float | None, figures: list,
) -> list[Block]:  # fmt: skip
    """A run of one shape: a pass's tables and figures."""
    title = plots.PASS_TITLES.get(pass_, pass_)
    blocks: list[Block] = [
        Heading(f"Results: {title}"),
        _time_table(df, pass_, run_calibration),
        *_unstable_section(df, pass_, run_calibration),
        _memory_table(df, pass_),
    ]
    path = run_dir / f"scaling-{pass_}.png"
    figures.append((path, plots.scaling_figure(df, pass_, sub, styles)))
    blocks.append(Image(path, f"time and memory against length, {title}"))
    if refs and any((r["pass"] == pass_).any() for r in refs.values()):
        path = run_dir / f"relative-{pass_}.png"
        figures.append((path, plots.relative_figure(refs, pass_, sub, styles)))
        blocks += [
            Text(RELATIVE_NOTE),
            Image(path, f"speedup and memory saving against full attention, {title}"),
        ]
    return blocks


def best_section(df: pd.DataFrame) -> list[Block]:
    return [
        Heading("Fastest backend per length and shape"),
        Text(
            "At each point of the grid and length, the backend with the shortest median time, "
            "and how many times slower the next one was (alone: no other backend finished "
            "there)."
        ),
        Table(best_table(df)),
    ]


def grid_results(
    run_dir: Path, df: pd.DataFrame, axes: list[str], refs: dict[str, pd.DataFrame], sub: str,
    styles: plots.Styles, run_calibration: float | None, figures: list,
) -> list[Block]:  # fmt: skip
    """A grid run: per pass, its figures (a panel per point of the grid) and a subsection of
    tables per point."""
    relative = speedups(refs)
    facets = grid.facets(df)
    per = ", ".join(axes)
    blocks: list[Block] = []
    for pass_ in df["pass"].unique():
        title = plots.PASS_TITLES.get(pass_, pass_)
        blocks.append(Heading(f"Results: {title}"))
        for quantity in ("time", "memory", "speedup"):
            data = relative if quantity == "speedup" else df
            if data.empty or not (data["pass"] == pass_).any():
                continue
            path = run_dir / f"{quantity}-{pass_}.png"
            figures.append((path, facet_figure(data, axes, quantity, pass_, sub, styles)))
            if quantity == "speedup":
                blocks.append(Text(RELATIVE_NOTE))
            blocks.append(Image(path, f"{quantity} against length per {per}, {title}"))
        for facet, rows in facets:
            if facet.pass_ == pass_:
                blocks += [
                    Heading(facet_title(facet), 3),
                    _time_table(rows, pass_, run_calibration),
                    *_unstable_section(rows, pass_, run_calibration),
                    _memory_table(rows, pass_),
                ]
    return blocks


def _unstable_section(df: pd.DataFrame, pass_: str, run_calibration: float | None) -> list[Block]:
    notes = unstable_notes(df, pass_, run_calibration)
    return [Bullets(tuple(notes))] if notes else []
