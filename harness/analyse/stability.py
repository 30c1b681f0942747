"""Can a measured time be believed? Stated rules over what a row recorded about its conditions.

pyperf warns when a benchmark looks unstable; these rules do the same for every case, from the
numbers the case stored (``harness.measure.conditions``, the calibration timed beside it,
the samples), so that a stored run is judged the same way on any machine, later. A rule that fires
gives one sentence; the sweep summary and the reports mark such a case and list the sentences,
and ``compare`` gives it the verdict ``inconclusive`` instead of a time verdict.

Rules for one case, judged on the time being shown or compared (``metric``: wall or CPU):

- ``spread``: the interquartile range is more than 10% of the median (pyperf warns at a
  standard deviation of 10% of the mean). Samples that disagree this much cannot resolve a
  difference of the size a comparison looks for.
- ``busy``: other processes used more than 25% of all CPUs' time while the case was timed, or
  the hypervisor stole more than 5% of it. Wall time then measures the neighbours as much as
  the case, and CPU time is no refuge: a process that shares its core has its caches emptied
  at every switch. Measured on a 2-core VM with ``harness.sweep.loadgen`` running (README, "Which
  time to judge"): single-threaded cases took 2.2-3.6x their quiet wall time and 0.95-1.46x
  their quiet CPU time; on 2 threads, 4.7-30x and 1.5-11x. On the same VM without load, no
  case's processes saw more than 12% (most under 6%).
- ``drift``: the calibration (``harness.measure.calibration``), timed just before and just
  after the case, changed by more than 40% in wall time: the machine changed speed meanwhile
  (briefly timed, it moved by up to 32% on the quiet VM).
- ``speed``: the calibration timed beside the case took more than 1.5x (or less
  than 1/1.5 of) the time it took at the start and end of the sweep: this case ran in a
  slower (or faster) moment than the rest of its run.

Rules of a comparison (``compare`` and ``--compare-to``) beside those of each side:

- ``not comparable``: the calibration ran more than 25% faster or slower beside the
  new case than beside the baseline's (50% with ``--normalise``, which divides that
  difference out, but cannot be trusted beyond it: neighbours slow different kernels by
  different factors).
- ``too few processes`` (in ``harness.analyse.regression``): with fewer than 3 processes a side the
  test runs on one process's samples, which share that process's moment and overstate
  significance; a difference found that way is not a verdict.

This module reads stored rows only; it needs neither torch nor a device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from harness.store.records import METRICS, Status, parse_floats

SPREAD_LIMIT = 0.10  # IQR / median
BUSY_LIMIT = 0.25  # other processes' share of all CPUs
STEAL_LIMIT = 0.05  # the hypervisor's share
DRIFT_LIMIT = 0.40  # calibration, after vs before the case
RUN_CALIBRATION_LIMIT = 1.5  # reference beside the case vs the run's
BASELINE_LIMIT = 1.25  # reference beside the new case vs beside the baseline's
BASELINE_LIMIT_NORMALISED = 1.5


def _number(row: Mapping, column: str) -> float | None:
    value = row.get(column)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def spread(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile range over median of ``values`` (0 for fewer than two)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return 0.0
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return float((q3 - q1) / median) if median > 0 else math.inf


def spread_warning(ratio: float, what: str = "samples") -> str | None:
    if ratio > SPREAD_LIMIT:
        return f"spread: the IQR of the {what} is {ratio:.0%} of their median"
    return None


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2g}x slower" if ratio >= 1 else f"{1 / ratio:.2g}x faster"


def condition_warnings(
    row: Mapping, metric: str = "wall", run_calibration_ms: float | None = None
) -> list[str]:
    """The ``busy``, ``drift`` and ``reference`` rules for one row (see the module docstring);
    ``run_calibration_ms`` is the run's calibration time in ``metric`` (``runs.calibration_ms``)."""
    found = []
    other, steal = _number(row, "other_cpu"), _number(row, "steal")
    if other is not None and other > BUSY_LIMIT:
        found.append(f"busy: other processes used {other:.0%} of the CPUs")
    if steal is not None and steal > STEAL_LIMIT:
        found.append(f"busy: the hypervisor stole {steal:.0%} of the CPUs")
    drift = _number(row, "calibration_drift")
    if metric == "wall" and drift is not None and drift > DRIFT_LIMIT:
        found.append(f"drift: the calibration changed by {drift:.0%} across the case")
    refs = parse_floats(row.get(METRICS[metric].process_calibration))
    if run_calibration_ms and refs:
        ratio = float(np.median(refs)) / run_calibration_ms
        if not 1 / RUN_CALIBRATION_LIMIT <= ratio <= RUN_CALIBRATION_LIMIT:
            found.append(
                f"speed: the calibration ran {_ratio_text(ratio)} beside this case "
                "than at the start and end of the sweep"
            )
    return found


def row_warnings(
    row: Mapping, metric: str = "wall", run_calibration_ms: float | None = None
) -> list[str]:
    """Every single-case rule for a stored row (sweep summary, report); [] for a stable case
    and for a case that was not measured."""
    if row.get("status") != Status.OK:
        return []
    m = METRICS[metric]
    found = []
    median, iqr = _number(row, m.median), _number(row, m.iqr)
    if median and iqr is not None:
        warning = spread_warning(iqr / median)
        if warning:
            found.append(warning)
    return found + condition_warnings(row, metric, run_calibration_ms)


def warnings_of(df: pd.DataFrame, run_calibration_ms: float | None = None) -> pd.Series:
    """``row_warnings`` (wall time) of every row of a run, as a column aligned with ``df``."""
    found = [row_warnings(r, run_calibration_ms=run_calibration_ms) for _, r in df.iterrows()]
    return pd.Series(found, index=df.index, dtype=object)


def baseline_warning(
    base_refs: Sequence[float], new_refs: Sequence[float], normalised: bool
) -> str | None:
    """The ``not comparable`` rule: the calibration beside the baseline's case and
    beside the new one, in the compared metric."""
    if not len(base_refs) or not len(new_refs):
        return None
    ratio = float(np.median(new_refs) / np.median(base_refs))
    limit = BASELINE_LIMIT_NORMALISED if normalised else BASELINE_LIMIT
    if 1 / limit <= ratio <= limit:
        return None
    return (
        f"not comparable: the calibration ran {_ratio_text(ratio)} than beside the baseline's case"
    )


MARK = "⚠"  # beside an unstable case's number in tables; its reasons go below the table


def notes(rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """One line per unstable case for below a table: (case name, its warnings) pairs in; cases
    without warnings are left out."""
    return [f"{MARK} {name}: {'; '.join(found)}" for name, found in rows if found]
