"""The report's figures, drawn with seaborn from a run's rows: log-log scaling of time and memory,
ratios to full attention, and the B/A ratios of two runs. Each function returns a Figure.

Time is shown with its spread: a band from the first to the third quartile of each case's
samples around the median time, and, for two runs, error bars of the 95% bootstrap interval of
each time ratio. Memory is one number per case, so it has neither.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # drawn without pyplot: no global state, no display needed
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from harness.analyse.analysis import latest, measured
from harness.store.records import FAILED, Status, parse_floats

PASS_TITLES = {"fwd": "forward", "fwdbwd": "forward + backward"}
FAILURE_MARKERS = {
    Status.OOM: ("X", "out of memory"),
    Status.TIMEOUT: ("v", "timed out"),
    Status.ERROR: ("s", str(Status.ERROR)),
}
MIB = 2**20
BAND_ALPHA = 0.2
# a median ± IQR/2 band (a row without samples) reaching zero cannot be drawn on a log axis:
# it is cut here, a fraction of the median, so as not to stretch the axis to nothing measured
BAND_FLOOR = 0.1
BAND_TEXT = "time: first to third quartile of the samples"
INTERVAL_TEXT = "time: 95% bootstrap interval of B / A"


def length_text(n: float) -> str:
    n = round(n)
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def ratio_text(x: float, _pos: object = None) -> str:
    return f"{x:g}×"


MARKERS = ["o", "s", "D", "^", "P", "p", "h", "*", "<", ">"]  # X and v mark failures


class Styles(dict):
    """Colour and marker of each series, fixed once per report so every figure agrees."""

    def __init__(self, labels: list[str]) -> None:
        labels = list(dict.fromkeys(labels))
        colors = sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
        markers = [MARKERS[i % len(MARKERS)] for i in range(len(labels))]
        super().__init__(zip(labels, zip(colors, markers, strict=True), strict=True))

    def subset(self, labels) -> Styles:
        keep, out = set(labels), Styles([])
        out.update({k: v for k, v in self.items() if k in keep})
        return out


MAX_TICKS = 12  # labelled lengths per axis: more overlap unreadably, and each costs a layout


def length_ticks(lengths: list[int]) -> list[int]:
    """The measured lengths to label: all of them, or ``MAX_TICKS`` spread evenly among them
    (a run of 256 lengths had 256 labels per axis, and its report took 30 s to draw)."""
    ticks = sorted(set(lengths))
    if len(ticks) <= MAX_TICKS:
        return ticks
    picks = np.unique(np.round(np.linspace(0, len(ticks) - 1, MAX_TICKS)).astype(int))
    return [ticks[i] for i in picks]


def _length_axis(ax: Axes, lengths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(length_ticks(lengths)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: length_text(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("sequence length n (tokens)")


def _lines(ax: Axes, data: pd.DataFrame, y: str, styles: Styles) -> None:
    styles = styles.subset(data["label"])
    if data.empty or not styles:
        return
    sns.lineplot(
        data=data,
        x="seq_len",
        y=y,
        hue="label",
        style="label",
        ax=ax,
        legend=False,
        palette={k: c for k, (c, _) in styles.items()},
        markers={k: m for k, (_, m) in styles.items()},
        dashes=False,
        markersize=7,
        linewidth=1.6,
        hue_order=list(styles),
        style_order=list(styles),
        errorbar=None,  # one value per length: the spread, where there is one, is drawn apart
    )


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


def _legend(fig: Figure, styles: Styles, failures: set[str], extra=()) -> None:
    handles = [Line2D([], [], color=c, marker=m, label=label) for label, (c, m) in styles.items()]
    handles += [
        Line2D(
            [],
            [],
            color="grey",
            marker=FAILURE_MARKERS[s][0],
            linestyle="none",
            markeredgecolor="black",
            markersize=9,
            label=f"{FAILURE_MARKERS[s][1]} (top edge)",
        )
        for s in FAILURE_MARKERS
        if s in failures
    ]
    handles += list(extra)
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(3, len(handles)),
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )


def _finish(fig: Figure, title: str, legend_rows: int) -> Figure:
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.04 + 0.045 * legend_rows, 1, 0.97))
    return fig


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
        _lines(ax, ok[ok[y] > 0], y, styles)
        if y == "time_median_ms":
            _bands(ax, ok, styles)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        _length_axis(ax, list(rows["seq_len"]))
        ax.grid(True, which="major", alpha=0.3)
        failures |= _mark_failures(ax, rows, y, styles)
    t_ax.set_title("time")
    m_ax.set_title("memory")
    band = Patch(facecolor="black", alpha=BAND_ALPHA, linewidth=0, label=BAND_TEXT)
    _legend(fig, styles, failures, extra=[band])
    n_legend = len(styles) + len(failures) + 1
    return _finish(fig, f"{PASS_TITLES.get(pass_, pass_)}: {subtitle}", -(-n_legend // 3))


def _ratio_axis(ax: Axes) -> None:
    """Log scale with ratio ticks dense enough to read, whatever the range (call after plotting:
    the ticks follow the data's limits)."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi / lo > 20:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    elif hi / lo > 3:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    else:  # within a factor of 3: linear steps of 0.05, 0.1, 0.2 or 0.5 around 1
        step = next(s for s in (0.05, 0.1, 0.2, 0.5) if (hi - lo) / s <= 10)
        ticks = np.arange(np.floor(lo / step), np.ceil(hi / step) + 1) * step
        ax.yaxis.set_major_locator(FixedLocator(ticks[ticks > 0]))
        ax.set_ylim(lo, hi)
    ax.yaxis.set_major_formatter(FuncFormatter(ratio_text))
    ax.yaxis.set_minor_locator(NullLocator())


def relative_figure(
    rel: dict[str, pd.DataFrame], pass_: str, subtitle: str, styles: Styles
) -> Figure:
    """Speedup and memory saving against each full-attention reference (columns), per length."""
    refs = list(rel)
    colors = styles.subset(lbl for r in rel.values() for lbl in r["label"][r["pass"] == pass_])
    fig = Figure(figsize=(6.5 * len(refs), 9))
    axes = fig.subplots(2, len(refs), squeeze=False)
    for col, ref in enumerate(refs):
        data = rel[ref][rel[ref]["pass"] == pass_]
        for row, (y, ylabel) in enumerate(
            (("speedup", "speedup (× faster)"), ("memory_saving", "memory saving (× less)"))
        ):
            ax = axes[row][col]
            _lines(ax, data.dropna(subset=[y]), y, colors)
            ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
            _ratio_axis(ax)
            ax.set_ylabel(ylabel)
            _length_axis(ax, list(data["seq_len"]) or [1024])
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{'speedup' if row == 0 else 'memory saving'} vs {ref}")
    even = Line2D([], [], color="black", linestyle="--", label="break-even (1×)")
    _legend(fig, colors, set(), extra=[even])
    return _finish(
        fig,
        f"{PASS_TITLES.get(pass_, pass_)}, relative to full attention: {subtitle}",
        -(-(len(colors) + 1) // 3),
    )


def _intervals(ax: Axes, d: pd.DataFrame, colors: dict) -> bool:
    """Error bars from ``time_ratio_low`` to ``time_ratio_high`` (the bootstrap interval), in the
    series' colour; False when no case has one."""
    if "time_ratio_low" not in d.columns:
        return False
    d = d.dropna(subset=["time_ratio_low", "time_ratio_high"])
    d = d[d["time_ratio_low"] > 0]
    for label, g in d.groupby("label", sort=False):
        low, high = g["time_ratio_low"].to_numpy(), g["time_ratio_high"].to_numpy()
        # centred (geometrically) on the interval, not on the ratio of the stored medians: with
        # several processes those are medians of process medians and may lie outside it
        mid = np.sqrt(low * high)
        ax.errorbar(
            g["seq_len"],
            mid,
            yerr=[mid - low, high - mid],
            fmt="none",
            ecolor=colors[label],
            elinewidth=1.2,
            capsize=3,
            alpha=0.8,
        )
    return not d.empty


def _interval_handle() -> Line2D:
    return Line2D(
        [], [], color="grey", marker="|", markersize=12, linestyle="none", label=INTERVAL_TEXT
    )


def ratio_figure(matched: pd.DataFrame, title: str) -> Figure:
    """B/A ratios of time and memory per case of two runs, against length; style = pass. Where
    ``matched`` has ``time_ratio_low`` and ``time_ratio_high`` (``comparison.match``), each time
    ratio gets that interval as an error bar."""
    labels = list(dict.fromkeys(matched["label"]))
    styles = Styles(labels)
    colors = {k: c for k, (c, _) in styles.items()}
    fig = Figure(figsize=(13, 5.8))
    axes = fig.subplots(1, 2)
    intervals = False
    for ax, y, ylabel in (
        (axes[0], "time_ratio", "time B / A"),
        (axes[1], "memory_ratio", "peak memory B / A"),
    ):
        d = matched.replace([np.inf, -np.inf], np.nan).dropna(subset=[y])
        d = d[d[y] > 0]
        if not d.empty:
            sns.lineplot(
                data=d,
                x="seq_len",
                y=y,
                hue="label",
                style="pass",
                palette=colors,
                markers=True,
                markersize=7,
                ax=ax,
                legend=False,
                hue_order=labels,
                errorbar=None,  # one ratio per case: its interval is drawn by _intervals
            )
            if y == "time_ratio":
                intervals = _intervals(ax, d, colors)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        _ratio_axis(ax)
        ax.set_ylabel(ylabel)
        _length_axis(ax, list(matched["seq_len"]))
        ax.grid(True, which="major", alpha=0.3)
    passes = list(dict.fromkeys(matched["pass"]))
    passes_ = [
        Line2D([], [], color="grey", linestyle=ls, marker=m, label=PASS_TITLES.get(p, p))
        for p, ls, m in zip(passes, ["-", "--"], ["o", "X"], strict=False)
    ]
    even = Line2D([], [], color="black", linestyle="--", label="no change (1×)")
    bars = [_interval_handle()] if intervals else []
    _legend(
        fig,
        Styles([]),
        set(),
        extra=[
            *(Line2D([], [], color=c, label=k) for k, c in colors.items()),
            *passes_,
            even,
            *bars,
        ],
    )
    return _finish(fig, title, -(-(len(colors) + len(passes_) + 1 + len(bars)) // 3))


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
