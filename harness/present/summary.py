"""The compact tables printed at the end of a sweep: backend x length, time and memory, one per
facet (pass, and point of the grid where the run sweeps one: ``harness.analyse.grid``), no line
longer than a terminal's 120 columns (cells wrap where needed, ``text_table``). Backends go by
short labels there (``facets.short_labels``, of the table's backends), by their whole labels in
the notes below.

A case whose time may not be believed (``harness.analyse.stability``: wide samples, a busy or
drifting machine) is marked ⚠ in its cell and listed with its reasons below the tables.
"""

from __future__ import annotations

import textwrap

import pandas as pd

from harness.analyse import grid, stability
from harness.analyse.families import ordered
from harness.present import text_table
from harness.present.facets import axis_text, short_labels
from harness.present.figure_parts import length_text
from harness.store.records import CHECK_FAILED, Status, check_failed

TERMINAL_WIDTH = 120


def _cell(row: pd.Series, unstable: bool) -> str:
    if row["status"] != Status.OK:
        return row["status"]
    text = f"{fmt_ms(row['time_median_ms'])} ±{fmt_ms(row['time_iqr_ms'], 2)}"
    if pd.notna(row.get("peak_mem_bytes")):
        text += f", {fmt_bytes(row['peak_mem_bytes'])}"
    if unstable:
        text += f" {stability.MARK}"
    if check_failed(row.get("reason")):
        text += f" {CHECK_FAILED}"
    return text


def fmt_ms(ms: float, digits: int = 3) -> str:
    """``digits`` significant digits in ms or s, never in exponent notation (396, not 4e+02)."""
    value, unit = (ms / 1000, "s") if ms >= 1000 else (ms, "ms")
    text = f"{value:.{digits}g}"
    return f"{value:.0f} {unit}" if "e" in text else f"{text} {unit}"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _title(facet: grid.Facet) -> str:
    return ", ".join([*(axis_text(a, v) for a, v in facet.point), facet.pass_])


def _where(row: pd.Series, axes: list[str]) -> str:
    """A case in a note: label, length, pass, and its point where the grid varies."""
    point = ", ".join(axis_text(a, grid.facet_value(row, a)) for a in axes)
    return f"{row['label']} @ {row['seq_len']} {row['pass']}" + (f" ({point})" if point else "")


def _span(rows: pd.DataFrame) -> str:
    """Several cases of one backend with one reason: the backend, how many, and the lengths and
    modes they span (the reason says the rest)."""
    lengths = sorted(rows["seq_len"].unique())
    span = length_text(lengths[0]) + (f" to {length_text(lengths[-1])}" if len(lengths) > 1 else "")
    modes = " ".join(dict.fromkeys(rows["pass"]))
    return f"{rows.iloc[0]['backend']} ({len(rows)} cases, n {span}, {modes})"


def _lines(items: list[str], width: int) -> list[str]:
    """Indented lines, each wrapped to ``width`` (continuations indented further)."""
    return [
        line
        for item in items
        for line in textwrap.wrap(item, width, initial_indent="  ", subsequent_indent="      ")
    ]


def _unstable_lines(df: pd.DataFrame, warnings: pd.Series, axes: list[str]) -> list[str]:
    # the tables show a case's last row (a resumed sweep may repeat it): so does the list, in
    # the tables' order (facet, then backend as first seen, then length)
    last = grid.present(df, grid.CASE_COLUMNS)
    rows = df.assign(_w=warnings).drop_duplicates(last, keep="last")
    order = {label: i for i, label in enumerate(dict.fromkeys(df["label"]))}
    items = []
    for _, g in grid.facets(rows):
        g = g.assign(_label=g["label"].map(order)).sort_values(["_label", "seq_len"], kind="stable")
        items += [f"{_where(r, axes)}: {'; '.join(r['_w'])}" for _, r in g.iterrows() if r["_w"]]
    return items


def summary_tables(
    df: pd.DataFrame, run_calibration_ms: float | None = None, width: int = TERMINAL_WIDTH
) -> str:
    """One table per facet (pass, and point of the varying grid axes): rows are backends (short
    labels), columns sequence lengths; each cell is median time ± IQR and peak memory beyond the
    inputs, or the case's status. A case whose time may not be believed is marked ⚠ and listed
    below the tables with its reasons; ``run_calibration_ms`` is the run's calibration time
    (``runs.calibration_ms``), None if unknown. No line is longer than ``width``.
    """
    if df.empty:
        return "(no results)"
    df = df.reset_index(drop=True)  # one label per row: the marks are looked up by it
    warnings = stability.warnings_of(df, run_calibration_ms)
    axes = grid.varying_grid_axes(df)
    parts = []
    for facet, group in grid.facets(df):
        group = ordered(group)  # family by family, ours before the peers
        names = short_labels(
            group["label"]
        )  # what varies within the table (the title has the rest)
        cells = group.assign(
            cell=[_cell(r, bool(warnings[i])) for i, r in group.iterrows()],
            backend=group["label"].map(names),
        )
        table = cells.pivot_table(
            index="backend", columns="seq_len", values="cell", aggfunc="last", sort=False
        ).fillna("")
        table = table[sorted(table.columns)]
        table.columns = [str(c) for c in table.columns]
        text = text_table.fit(table.reset_index(), width)
        title = f"[{_title(facet)}] median time ± IQR, peak memory beyond inputs"
        parts.append("\n".join([*textwrap.wrap(title, width), text]))
    unstable = _unstable_lines(df, warnings, axes)
    if unstable:
        parts.append(
            "unstable (the time may not be believed):\n" + "\n".join(_lines(unstable, width))
        )
    notes = df[(df["status"] != Status.OK) & (df["reason"].astype(str) != "")]
    if not notes.empty:
        items = []
        for _, same in notes.groupby(["backend", "status", "reason"], sort=False):
            first = same.iloc[0]
            where = _where(first, axes) if len(same) == 1 else _span(same)
            items.append(f"{where}: {first['status']}: {first['reason']}")
        parts.append("not measured:\n" + "\n".join(_lines(items, width)))
    return "\n\n".join(parts)
