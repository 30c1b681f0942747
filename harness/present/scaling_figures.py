"""The scaling figure: time and peak memory against length on log-log axes, one line per
series. Time is shown with its spread: a band from the first to the third quartile of each case's
samples around the median time; memory is one number per case, so it has none. A case that ran
out of memory or time, or failed, is marked on the top edge at its length.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analyse.analysis import latest, measured
from harness.present.figure_parts import (
    BAND_ALPHA,
    FAILURE_MARKERS,
    MIB,
    PASS_TITLES,
    Styles,
    draw_legend,
    draw_lines,
    finish,
    length_axis,
)
from harness.store.records import FAILED, Status, parse_floats

# a median ± IQR/2 band (a row without samples) reaching zero cannot be drawn on a log axis:
# it is cut here, a fraction of the median, so as not to stretch the axis to nothing measured
BAND_FLOOR = 0.1
BAND_TEXT = "time: first to third quartile of the samples"


def quartiles(row: pd.Series) -> tuple[float, float]:
    """First and third quartile of a case's time samples (ms); for a row without samples, the
    median ± IQR/2, which is all it recorded."""
    samples = parse_floats(row.get("time_samples_ms"))
    if samples:
        q1, q3 = np.quantile(samples, [0.25, 0.75])
        return float(q1), float(q3)
    median, iqr = float(row["time_median_ms"]), row.get("time_iqr_ms")
    half = float(iqr) / 2 if pd.notna(iqr) else 0.0
    return max(median - half, BAND_FLOOR * median), median + half


def _bands(ax: Axes, ok: pd.DataFrame, styles: Styles) -> None:
    """The time's interquartile band of each series, in its colour, behind its line."""
    for label, (color, _) in styles.items():
        ours = ok[(ok["label"] == label) & (ok["time_median_ms"] > 0)].sort_values("seq_len")
        if ours.empty:
            continue
        low, high = np.array([quartiles(r) for _, r in ours.iterrows()]).T
        ax.fill_between(
            ours["seq_len"], low, high, color=color, alpha=BAND_ALPHA, linewidth=0, zorder=1
        )


def _mark_failures(ax: Axes, rows: pd.DataFrame, y: str, styles: Styles) -> set[str]:
    """Marks each case that ran out of memory or time, or failed, on the top edge at its length,
    joined by a dotted line to the series' last measured point: it went off the chart there."""
    used = set()
    failed = rows[rows["status"].isin(FAILED)]
    bottom, top = ax.get_ylim()
    for label, (color, _) in styles.items():
        ours = rows[rows["label"] == label]
        for _, r in failed[failed["label"] == label].iterrows():
            marker, _ = FAILURE_MARKERS[r["status"]]
            before = ours[(ours["status"] == Status.OK) & (ours["seq_len"] < r["seq_len"])]
            if not before.empty and pd.notna(before[y].iloc[-1]):
                last = before.sort_values("seq_len").iloc[-1]
                ax.plot(
                    [last["seq_len"], r["seq_len"]],
                    [last[y], top],
                    linestyle=":",
                    color=color,
                    linewidth=1.4,
                )
            ax.plot(
                r["seq_len"],
                top,
                marker=marker,
                markersize=11,
                color=color,
                markeredgecolor="black",
                linestyle="none",
                clip_on=False,
                zorder=5,
            )
            used.add(r["status"])
    ax.set_ylim(bottom, top)
    return used


def scaling_figure(df: pd.DataFrame, pass_: str, subtitle: str, styles: Styles) -> Figure:
    """Time and peak memory against length, log-log, one line per series; around each time line
    a band from the first to the third quartile of the samples."""
    rows = latest(df[df["pass"] == pass_]).assign(mem_mib=lambda d: d["peak_mem_bytes"] / MIB)
    styles = styles.subset(rows["label"])
    ok = measured(rows)
    fig = Figure(figsize=(13, 5.8))
    t_ax, m_ax = fig.subplots(1, 2)
    failures = set()
    for ax, y, ylabel in (
        (t_ax, "time_median_ms", "median time (ms)"),
        (m_ax, "mem_mib", "peak memory beyond inputs (MiB)"),
    ):
        draw_lines(ax, ok[ok[y] > 0], y, styles)
        if y == "time_median_ms":
            _bands(ax, ok, styles)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        length_axis(ax, list(rows["seq_len"]))
        ax.grid(True, which="major", alpha=0.3)
        failures |= _mark_failures(ax, rows, y, styles)
    t_ax.set_title("time")
    m_ax.set_title("memory")
    band = Patch(facecolor="black", alpha=BAND_ALPHA, linewidth=0, label=BAND_TEXT)
    draw_legend(fig, styles, failures, extra=[band])
    n_legend = len(styles) + len(failures) + 1
    return finish(fig, f"{PASS_TITLES.get(pass_, pass_)}: {subtitle}", -(-n_legend // 3))
