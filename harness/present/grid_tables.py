"""The report's tables of a grid run: the fastest backend at each point of the grid and length."""

from __future__ import annotations

import pandas as pd

from harness.analyse import analysis, grid
from harness.present.facets import axis_text
from harness.present.figure_parts import length_text
from harness.present.summary import fmt_ms


def best_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per pass, point of the varying grid axes (a column each) and length: the fastest measured
    backend, its median time, the runner-up and how many times slower it was."""
    best = analysis.best_backends(df)
    axes = grid.varying_grid_axes(df)
    table = pd.DataFrame(
        {
            "pass": best["pass"].map(lambda p: axis_text("pass", p)),
            **{a: best[a].map(lambda v, a=a: axis_value(a, v)) for a in axes},
            "n": best["seq_len"].map(length_text),
            "fastest": best["label"],
            "time": best["time_median_ms"].map(fmt_ms),
            "runner-up": best["runner_up"].fillna("(alone)"),
            "runner-up / fastest": best["ratio"].map(lambda r: f"{r:.3g}×" if pd.notna(r) else ""),
        }
    )
    return table


def axis_value(axis: str, value: object) -> str:
    """A grid axis's value in its own column: the title's words without the axis's name."""
    if axis == "inputs":
        return str(value)
    text = axis_text(axis, value)
    return text[len(axis) + 1 :] if text.startswith(f"{axis} ") else text
