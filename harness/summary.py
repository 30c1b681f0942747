"""The compact table printed at the end of a sweep: backend x length, time and memory."""

from __future__ import annotations

import pandas as pd


def _cell(row: pd.Series) -> str:
    if row["status"] != "ok":
        return row["status"]
    text = f"{fmt_ms(row['time_median_ms'])} ±{fmt_ms(row['time_iqr_ms'], 2)}"
    if pd.notna(row.get("peak_mem_bytes")):
        text += f", {fmt_bytes(row['peak_mem_bytes'])}"
    if str(row.get("reason", "")).startswith("CHECK FAILED"):
        text += " CHECK FAILED"
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


def summary_tables(df: pd.DataFrame) -> str:
    """One table per pass: rows are backends (with parameters), columns sequence lengths; each
    cell is median time ± IQR and peak memory beyond the inputs, or the case's status."""
    if df.empty:
        return "(no results)"
    parts = []
    for pass_, group in df.groupby("pass", sort=False):
        cells = group.assign(cell=group.apply(_cell, axis=1))
        table = cells.pivot_table(
            index="label", columns="seq_len", values="cell", aggfunc="last", sort=False
        ).fillna("")
        table.columns = [str(c) for c in table.columns]
        table.index.name = None
        parts.append(f"[{pass_}] median time ± IQR, peak memory beyond inputs\n{table.to_string()}")
    notes = df[(df["status"] != "ok") & (df["reason"].astype(str) != "")]
    if not notes.empty:
        lines = notes.drop_duplicates(["backend", "status", "reason"]).apply(
            lambda r: (
                f"  {r['backend']} @ {r['seq_len']} {r['pass']}: {r['status']}: {r['reason']}"
            ),
            axis=1,
        )
        parts.append("not measured:\n" + "\n".join(lines))
    return "\n\n".join(parts)
