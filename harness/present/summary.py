"""The compact table printed at the end of a sweep: backend x length, time and memory.

A case whose time may not be believed (``harness.analyse.stability``: wide samples, a busy or
drifting machine) is marked ⚠ in its cell and listed with its reasons below the tables.
"""

from __future__ import annotations

import pandas as pd

from harness.analyse import stability
from harness.store.records import CHECK_FAILED, Status, check_failed


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


def _unstable_lines(df: pd.DataFrame, warnings: pd.Series) -> list[str]:
    # the table shows a case's last row (a resumed sweep may repeat it): so does the list, in
    # the tables' order (pass, then backend as first seen, then length)
    last = df.assign(_w=warnings).drop_duplicates(["label", "pass", "seq_len"], keep="last")
    first_seen = {c: {v: i for i, v in enumerate(dict.fromkeys(df[c]))} for c in ("pass", "label")}
    last = last.assign(
        _pass=last["pass"].map(first_seen["pass"]), _label=last["label"].map(first_seen["label"])
    ).sort_values(["_pass", "_label", "seq_len"], kind="stable")
    return [
        f"  {r['label']} @ {r['seq_len']} {r['pass']}: {'; '.join(r['_w'])}"
        for _, r in last.iterrows()
        if r["_w"]
    ]


def summary_tables(df: pd.DataFrame, run_calibration_ms: float | None = None) -> str:
    """One table per pass: rows are backends (with parameters), columns sequence lengths; each
    cell is median time ± IQR and peak memory beyond the inputs, or the case's status. A case
    whose time may not be believed is marked ⚠ and listed below the tables with its reasons;
    ``run_calibration_ms`` is the run's calibration time (``runs.calibration_ms``), None if unknown.
    """
    if df.empty:
        return "(no results)"
    df = df.reset_index(drop=True)  # one label per row: the marks are looked up by it
    warnings = stability.warnings_of(df, run_calibration_ms)
    parts = []
    for pass_, group in df.groupby("pass", sort=False):
        cells = group.assign(cell=[_cell(r, bool(warnings[i])) for i, r in group.iterrows()])
        table = cells.pivot_table(
            index="label", columns="seq_len", values="cell", aggfunc="last", sort=False
        ).fillna("")
        table.columns = [str(c) for c in table.columns]
        table.index.name = None
        parts.append(f"[{pass_}] median time ± IQR, peak memory beyond inputs\n{table.to_string()}")
    unstable = _unstable_lines(df, warnings)
    if unstable:
        parts.append("unstable (the time may not be believed):\n" + "\n".join(unstable))
    notes = df[(df["status"] != Status.OK) & (df["reason"].astype(str) != "")]
    if not notes.empty:
        lines = notes.drop_duplicates(["backend", "status", "reason"]).apply(
            lambda r: (
                f"  {r['backend']} @ {r['seq_len']} {r['pass']}: {r['status']}: {r['reason']}"
            ),
            axis=1,
        )
        parts.append("not measured:\n" + "\n".join(lines))
    return "\n\n".join(parts)
