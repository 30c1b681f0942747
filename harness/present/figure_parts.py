"""What the report's figures share: the look of each series (``Styles``), the log-scaled
length and ratio axes, the lines, the legend below the panels, the title and layout, and saving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # drawn without pyplot: no global state, no display needed
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from harness.store.records import Status

PASS_TITLES = {"fwd": "forward", "fwd-grad": "forward for autograd", "bwd": "backward",
               "fwdbwd": "forward + backward"}  # fmt: skip
FAILURE_MARKERS = {
    Status.OOM: ("X", "out of memory"),
    Status.TIMEOUT: ("v", "timed out"),
    Status.ERROR: ("s", str(Status.ERROR)),
}
MIB = 2**20
BAND_ALPHA = 0.2


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


def length_axis(ax: Axes, lengths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(length_ticks(lengths)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: length_text(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("sequence length n (tokens)")


def draw_lines(ax: Axes, data: pd.DataFrame, y: str, styles: Styles) -> None:
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


def ratio_axis(ax: Axes) -> None:
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


def draw_legend(fig: Figure, styles: Styles, failures: set[str], extra=()) -> None:
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


def finish(fig: Figure, title: str, legend_rows: int) -> Figure:
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.04 + 0.045 * legend_rows, 1, 0.97))
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
