"""The report's tables as DataFrames of display strings, one function per table.

A time that may not be believed (``harness.analyse.stability``) carries ⚠ in its cell;
``unstable_notes`` gives the lines that say why, for below the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.analyse import analysis, grid, stability
from harness.analyse.families import ordered
from harness.present.facets import (
    facet_title,
    point_title,
    shape_column,
    short_labels,
    with_shape,
)
from harness.present.plots import length_text
from harness.present.summary import fmt_bytes, fmt_ms
from harness.store.records import CHECK_FAILED, FAILED, Status, check_failed, check_tolerance


def _cell_status(row: pd.Series) -> str | None:
    if row["status"] == Status.OK:
        return None
    return "OOM" if row["status"] == Status.OOM else str(row["status"])


def _pivot(df: pd.DataFrame, pass_: str, cell, axes: Sequence[str] = ()) -> pd.DataFrame:
    """Backend x length of ``cell`` of each row of ``pass_``; with ``axes`` (varying grid
    axes) a row per point and backend, the point in a "shape" column first. Backends go family
    by family, ours before the peers (``families.ordered``)."""
    rows = ordered(df[df["pass"] == pass_])
    cells = rows.assign(cell=rows.apply(cell, axis=1))
    index = ["label"]
    if axes:
        cells, index = cells.assign(shape=shape_column(cells, axes)), ["shape", "label"]
    table = cells.pivot_table(
        index=index, columns="seq_len", values="cell", aggfunc="last", sort=False
    ).fillna("")
    table = table[sorted(table.columns)]
    table.columns = [length_text(c) for c in table.columns]
    return table.reset_index().rename(columns={"label": "backend"})


def _mark(r: pd.Series, run_calibration_ms: float | None) -> str:
    return (
        f" {stability.MARK}"
        if stability.row_warnings(r, run_calibration_ms=run_calibration_ms)
        else ""
    )


def metric_table(
    df: pd.DataFrame, pass_: str, metric: str, run_calibration_ms: float | None = None
) -> pd.DataFrame:
    """Backend x length of median time ± IQR (``metric`` "time"; an unstable case marked, judged
    against the run's calibration time ``run_calibration_ms``) or of peak memory ("memory")."""

    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status:
            return status
        if metric == "time":
            text = f"{fmt_ms(r['time_median_ms'])} ± {fmt_ms(r['time_iqr_ms'], 2)}"
            return text + _mark(r, run_calibration_ms)
        return fmt_bytes(r["peak_mem_bytes"]) if pd.notna(r["peak_mem_bytes"]) else ""

    return _pivot(df, pass_, cell)


def unstable_notes(
    df: pd.DataFrame, pass_: str, run_calibration_ms: float | None = None
) -> list[str]:
    """One line per case of ``pass_`` marked in its time table: the stability rules that fired."""
    rows = analysis.latest(df[df["pass"] == pass_])
    # in the table's order: backends as they first appear, each by length
    order = {label: i for i, label in enumerate(dict.fromkeys(rows["label"]))}
    rows = rows.assign(_order=rows["label"].map(order)).sort_values(["_order", "seq_len"])
    return stability.notes(
        [
            (
                f"{r['label']} at {length_text(r['seq_len'])}",
                stability.row_warnings(r, run_calibration_ms=run_calibration_ms),
            )
            for _, r in rows.iterrows()
        ]
    )


def rate_table(df: pd.DataFrame, pass_: str) -> pd.DataFrame:
    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status or pd.isna(r["tflops"]):
            return status or ""
        text = f"{r['tflops']:.3g}"
        if pd.notna(r.get("peak_fraction")):
            text += f" ({r['peak_fraction']:.0%})"
        return text

    return _pivot(df, pass_, cell)


def setup_table(df: pd.DataFrame, pass_: str) -> pd.DataFrame:
    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status or pd.isna(r.get("prepare_ms")):
            return status or ""
        return f"{fmt_ms(r['prepare_ms'], 2)} / {fmt_ms(r['first_call_ms'], 2)}"

    return _pivot(df, pass_, cell)


def glance(df: pd.DataFrame, run_calibration_ms: float | None = None) -> list[str]:
    """One line per facet (pass, and point of the grid where it varies): who is fastest and
    leanest at the longest length where at least two backends finished (one alone is no
    comparison); an unstable time marked as in the tables."""
    lines = []
    for facet, g in grid.facets(df):
        ok = analysis.measured(g)
        if ok.empty:
            continue
        counts = ok["seq_len"].value_counts()
        n = max(counts.index[counts >= min(2, counts.max())])
        at = ok[ok["seq_len"] == n]
        fast = at.loc[at["time_median_ms"].idxmin()]
        lean = at.loc[at["peak_mem_bytes"].idxmin()] if at["peak_mem_bytes"].notna().any() else None
        text = (
            f"{facet_title(facet)} at n = {length_text(n)}: fastest **{fast['label']}**"
            f" ({fmt_ms(fast['time_median_ms'])}{_mark(fast, run_calibration_ms)})"
        )
        exact = at["family"] == "full"  # full attention: the others are patterns or formulas
        full = at[exact]
        if not full.empty and not exact[fast.name]:
            best_full = full.loc[full["time_median_ms"].idxmin()]
            ratio = best_full["time_median_ms"] / fast["time_median_ms"]
            text += f", {ratio:.3g}× faster than {best_full['label']}"
        if lean is not None:
            text += f"; least memory **{lean['label']}** ({fmt_bytes(lean['peak_mem_bytes'])})"
        failed = g[g["status"].isin(FAILED)]
        if not failed.empty:
            text += "; did not finish: " + ", ".join(
                f"{r['label']} at {length_text(r['seq_len'])} ({r['status']})"
                for _, r in failed.iterrows()
            )
        lines.append(text + ".")
    return lines or ["No case finished."]


def glance_crossovers(cross: pd.DataFrame, yardsticks: set[str] | None = None) -> list[str]:
    """One line per pass, point of the grid and full-attention yardstick (every full-attention
    reference where ``yardsticks`` is None): where each other backend pays off. Backends not
    compared with it (skipped at that point) are left out; the crossover table has them all."""
    lines = []
    if yardsticks is not None:
        cross = cross[cross["reference"].isin(yardsticks)]
    axes = grid.varying_grid_axes(cross)
    names = short_labels(cross["label"])  # a backend's name, and its parameters that vary
    for key, g in cross.groupby(["pass", *axes, "reference"], sort=False):
        pass_, *point, ref = key
        parts = [
            f"{names[r['label']]} {_short(r['time'], 'faster')}, "
            f"{_short(r['memory'], 'less memory')}"
            for _, r in g.iterrows()
            if r["time"].lengths or r["memory"].lengths
        ]
        if not parts:
            continue
        title = facet_title(grid.Facet(pass_, tuple(zip(axes, point, strict=True))))
        lines.append(f"{title}, against {ref}: " + "; ".join(parts) + ".")
    return lines


def _short(c: analysis.Crossover, what: str) -> str:
    if c.first is None:
        return f"never {what}" if c.lengths else f"{what}: not compared"
    if c.first == c.lengths[0]:
        return f"{what} at every length"
    return f"{what} from {length_text(c.first)}"


def _fit(fit: analysis.Fit | None) -> str:
    return fit.text() if fit is not None else "–"


def _span(fit: analysis.Fit | None) -> str:
    return f"{length_text(fit.lengths[0])}–{length_text(fit.lengths[1])}" if fit else ""


def exponent_table(exps: pd.DataFrame) -> pd.DataFrame:
    """One row per series (``analysis.exponents``); its point of the grid in a "shape" column
    where the grid has more than one."""
    rows = []
    for _, e in exps.iterrows():
        promised = "" if e["promised"] is None or pd.isna(e["promised"]) else e["promised"]
        rows.append(
            {
                "backend": e["label"],
                "pass": e["pass"],
                "time exponent": _fit(e["time"]),
                "time, 3 longest": _fit(e["time_tail"]),
                "memory exponent": _fit(e["memory"]) + (" ⚠" if e["flag"] else ""),
                "memory, 3 longest": _fit(e["memory_tail"]),
                "promise": f"{e['promise']} → {promised:.2f}"
                if promised != ""
                else e["promise"] or "unknown",
                "lengths": _span(e["time"]),
            }
        )
    return with_shape(pd.DataFrame(rows), exps, grid.varying_grid_axes(exps), 2)


def crossover_table(cross: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "backend": cross["label"],
            "pass": cross["pass"],
            "against": cross["reference"],
            "faster from n =": [c.text() for c in cross["time"]],
            "less memory from n =": [c.text() for c in cross["memory"]],
        }
    )
    return with_shape(table, cross, grid.varying_grid_axes(cross), 2)


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """The worst error against each backend's own mask per series (per point of the grid where
    it varies: the tolerance depends on the dtype); the error against full attention is
    ``family_tables.error_table``'s."""
    ok = analysis.measured(df)
    axes = grid.varying_grid_axes(df)
    rows = []
    for key, g in ok.groupby(["label", "pass", *grid.keys(ok, axes)], sort=False):
        label, pass_, *point = key
        worst = g["max_err"].max()
        tol = check_tolerance(str(g["dtype"].iloc[0]))
        failed = g["reason"].map(check_failed).sum()
        verdict = CHECK_FAILED if failed else ("within" if worst <= tol else "above")
        rows.append(
            {
                "backend": label,
                "pass": pass_,
                **({"shape": point_title(zip(axes, point, strict=True))} if axes else {}),
                "max error vs own mask": "" if pd.isna(worst) else f"{worst:.2g}",
                "tolerance": f"{tol:g}",
                "verdict": verdict if not math.isnan(worst) else "",
            }
        )
    return pd.DataFrame(rows)


def failure_table(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != Status.OK]
    table = pd.DataFrame(
        {
            "backend": bad["label"],
            "pass": bad["pass"],
            "n": bad["seq_len"].map(length_text),
            "status": bad["status"],
            "reason": bad["reason"].astype(str).str.slice(0, 160),
        }
    )
    return with_shape(table, bad, grid.varying_grid_axes(df), 2)
