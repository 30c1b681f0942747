"""The figures of a grid run: one figure per pass and quantity (time, memory, speedup against
full attention), a panel per point of the grid's varying axes (the last axis across, the others
down; for speedups, one row of panels per full-attention reference as well), so that a grid of
many points keeps to a few figures. Each panel is drawn as a run of one shape's figure is.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.analyse.analysis import measured
from harness.analyse.grid import facet_values
from harness.present.facets import axis_text
from harness.present.figure_parts import (
    BAND_ALPHA,
    MIB,
    PASS_TITLES,
    Styles,
    draw_legend,
    draw_lines,
    finish,
    length_axis,
    ratio_axis,
)
from harness.present.scaling_figures import BAND_TEXT, _bands, _mark_failures

QUANTITIES = {
    "time": ("time_median_ms", "median time (ms)"),
    "memory": ("mem_mib", "peak memory beyond inputs (MiB)"),
    "speedup": ("speedup", "speedup (× faster)"),
}
VS = "_vs"  # the column naming the reference of a speedup


def _keys(data: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """The points of ``columns`` (facet values) in ``data``, in the order first seen."""
    if not columns:
        return [()]
    values = zip(*(facet_values(data, c).astype(str) for c in columns), strict=True)
    return list(dict.fromkeys(values))


def _at(data: pd.DataFrame, columns: Sequence[str], key: tuple) -> pd.Series:
    mask = pd.Series(True, index=data.index)
    for column, value in zip(columns, key, strict=True):
        mask &= facet_values(data, column).astype(str) == value
    return mask


def _title(columns: Sequence[str], key: tuple) -> str:
    parts = [
        f"vs {v}" if c == VS else axis_text(c, _typed(c, v))
        for c, v in zip(columns, key, strict=True)
    ]
    return ", ".join(parts)


def _typed(axis: str, text: str) -> object:
    return text == "True" if axis == "causal" else text


def facet_figure(
    data: pd.DataFrame, axes: Sequence[str], quantity: str, pass_: str, subtitle: str,
    styles: Styles,
) -> Figure:  # fmt: skip
    """``quantity`` ("time", "memory"; or "speedup", from ``analysis.relative_to`` frames with
    the reference's name in a ``VS`` column) against length, log-log, a panel per point of
    ``axes`` (``grid.varying_grid_axes``), one line per series."""
    y, ylabel = QUANTITIES[quantity]
    data = data[data["pass"] == pass_]
    if quantity == "memory":
        data = data.assign(mem_mib=data["peak_mem_bytes"] / MIB)
    across, down = axes[-1], [*([VS] if quantity == "speedup" else []), *axes[:-1]]
    cols, rows = _keys(data, [across]), _keys(data, down)
    styles = styles.subset(data["label"])
    fig = Figure(figsize=(min(4.6 * len(cols) + 1, 22), 3.8 * len(rows) + 1.8))
    panels = fig.subplots(len(rows), len(cols), squeeze=False, sharey=quantity != "speedup")
    drawn = []
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = panels[i][j]
            here = data[_at(data, down, row) & _at(data, [across], col)]
            ok = measured(here) if "status" in here.columns else here
            draw_lines(ax, ok[ok[y] > 0], y, styles)
            if quantity == "speedup":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
                ratio_axis(ax)
            else:
                if quantity == "time":
                    _bands(ax, ok, styles)
                ax.set_yscale("log")
                drawn.append((ax, here))
            length_axis(ax, list(data["seq_len"]) or [1024])
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(", ".join(t for t in (_title(down, row), _title([across], col)) if t))
            ax.set_ylabel(ylabel if j == 0 else "")
            if i < len(rows) - 1:
                ax.set_xlabel("")
    failures: set[str] = set()
    for ax, here in drawn:  # on the top edge once every panel is drawn: they share the y axis
        failures |= _mark_failures(ax, here, y, styles)
    extra: list = []
    if quantity == "time":
        extra.append(Patch(facecolor="black", alpha=BAND_ALPHA, linewidth=0, label=BAND_TEXT))
    if quantity == "speedup":
        extra.append(Line2D([], [], color="black", linestyle="--", label="break-even (1×)"))
    draw_legend(fig, styles, failures, extra=extra)
    what = {"time": "time", "memory": "peak memory", "speedup": "speedup against full attention"}
    title = f"{PASS_TITLES.get(pass_, pass_)}, {what[quantity]}: {subtitle}"
    n_legend = len(styles) + len(failures) + len(extra)
    return finish(fig, title, -(-n_legend // 3))


def speedups(refs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The frames of ``analysis.relative_to`` per reference as one, the reference in ``VS``."""
    frames = [r.assign(**{VS: name}) for name, r in refs.items() if not r.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
