"""The report's figures, drawn with seaborn from a run's rows: log-log scaling of time and memory
(``scaling_figures``), ratios to full attention and the B/A ratios of two runs
(``ratio_figures``), on the axes, styles and legend they share (``figure_parts``). Each function
returns a Figure; ``save`` writes it. The report modules call them as ``plots.NAME``.

Time is shown with its spread: a band from the first to the third quartile of each case's
samples around the median time, and, for two runs, error bars of the 95% bootstrap interval of
each time ratio. Memory is one number per case, so it has neither.
"""

from __future__ import annotations

from harness.present.figure_parts import (
    BAND_ALPHA,
    FAILURE_MARKERS,
    MARKERS,
    MAX_TICKS,
    MIB,
    PASS_TITLES,
    Styles,
    length_text,
    length_ticks,
    ratio_text,
    save,
)
from harness.present.ratio_figures import INTERVAL_TEXT, ratio_figure, relative_figure
from harness.present.scaling_figures import BAND_FLOOR, BAND_TEXT, quartiles, scaling_figure

__all__ = [
    "BAND_ALPHA",
    "BAND_FLOOR",
    "BAND_TEXT",
    "FAILURE_MARKERS",
    "INTERVAL_TEXT",
    "MARKERS",
    "MAX_TICKS",
    "MIB",
    "PASS_TITLES",
    "Styles",
    "length_text",
    "length_ticks",
    "quartiles",
    "ratio_figure",
    "ratio_text",
    "relative_figure",
    "save",
    "scaling_figure",
]
