"""The ratio figures: each backend's speedup and memory saving against the full-attention
references, and the B / A ratios of time and memory per case of two runs (each time ratio with
its 95% bootstrap interval as an error bar, where the comparison has one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.present.figure_parts import (
    PASS_TITLES,
    Styles,
    draw_legend,
    draw_lines,
    finish,
    length_axis,
    ratio_axis,
)

INTERVAL_TEXT = "time: 95% bootstrap interval of B / A"


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
            draw_lines(ax, data.dropna(subset=[y]), y, colors)
            ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
            ratio_axis(ax)
            ax.set_ylabel(ylabel)
            length_axis(ax, list(data["seq_len"]) or [1024])
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{'speedup' if row == 0 else 'memory saving'} vs {ref}")
    even = Line2D([], [], color="black", linestyle="--", label="break-even (1×)")
    draw_legend(fig, colors, set(), extra=[even])
    return finish(
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
        ratio_axis(ax)
        ax.set_ylabel(ylabel)
        length_axis(ax, list(matched["seq_len"]))
        ax.grid(True, which="major", alpha=0.3)
    passes = list(dict.fromkeys(matched["pass"]))
    passes_ = [
        Line2D([], [], color="grey", linestyle=ls, marker=m, label=PASS_TITLES.get(p, p))
        for p, ls, m in zip(passes, ["-", "--"], ["o", "X"], strict=False)
    ]
    even = Line2D([], [], color="black", linestyle="--", label="no change (1×)")
    bars = [_interval_handle()] if intervals else []
    draw_legend(
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
    return finish(fig, title, -(-(len(colors) + len(passes_) + 1 + len(bars)) // 3))
