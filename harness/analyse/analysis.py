"""What a report computes from a run's stored rows: fitted scaling exponents, crossover lengths,
ratios to full attention and achieved FLOP rates. Pure functions of ``results.csv`` rows.

A *series* is one backend with its parameters (the stored ``label``) at one point of the grid
(``grid.SERIES_COLUMNS``: pass and shape); within a run it is measured at several lengths. A
case is a series at one length (``CASE_COLUMNS``). Nothing here mixes two points of a grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analyse import flops, grid
from harness.analyse.grid import CASE_COLUMNS, present, series_keys
from harness.store.facts import Promise
from harness.store.records import FAILED, GRID_AXES, Status

__all__ = ["CASE_COLUMNS", "Crossover", "Fit", "best_backends", "crossover", "crossovers",
           "exponents", "fit_power", "latest", "measured", "promised_exponent", "relative_to",
           "with_rates", "yardstick_labels", "yardsticks"]  # fmt: skip

MEMORY_SLACK = 0.15  # a memory exponent this far above the promise is flagged


@dataclass(frozen=True)
class Fit:
    """Least-squares slope of log(y) on log(n), with its standard error (None from 2 points)."""

    slope: float
    stderr: float | None
    points: int
    lengths: tuple[int, int]  # the shortest and longest length fitted

    def text(self) -> str:
        if self.stderr is None:
            return f"{self.slope:.2f} (2 points)"
        return f"{self.slope:.2f} ± {self.stderr:.2f}"


def promised_exponent(promise: Promise, lengths: np.ndarray) -> float:
    """The log-log slope a promise implies over these lengths (n log n is not a power)."""
    return fit_power(lengths, promise.cost(lengths)).slope


def yardstick_labels(df: pd.DataFrame) -> set[str]:
    """The labels of the yardstick backends' series (their parameters, such as causal, in)."""
    return set(df.loc[df["yardstick"].fillna(False).astype(bool), "label"].unique())


def yardsticks(df: pd.DataFrame) -> list[str]:
    """The full-attention backends of the run that every other is measured against."""
    return list(df.loc[df["yardstick"].fillna(False).astype(bool), "backend"].unique())


def fit_power(lengths: np.ndarray, values: np.ndarray) -> Fit | None:
    """Fit ``values ≈ a * lengths ** slope``; points with a non-positive value are left out."""
    n, y = np.asarray(lengths, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(y) & (y > 0) & (n > 0)
    n, y = n[keep], y[keep]
    if len(np.unique(n)) < 2:
        return None
    x, y_log = np.log(n), np.log(y)
    dx = x - x.mean()
    slope = float((dx * (y_log - y_log.mean())).sum() / (dx**2).sum())
    stderr = None
    if len(x) >= 3:
        resid = y_log - y_log.mean() - slope * dx
        stderr = float(math.sqrt((resid**2).sum() / (len(x) - 2) / (dx**2).sum()))
    return Fit(slope, stderr, len(x), (int(n.min()), int(n.max())))


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """One row per case: the last one recorded (a resumed run may repeat a case, a
    re-measurement round appends it again)."""
    return df.drop_duplicates(present(df, CASE_COLUMNS), keep="last")


def measured(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == Status.OK]


def exponents(df: pd.DataFrame, tail: int = 3) -> pd.DataFrame:
    """Per series (label, pass and point of the grid, whose axes are columns too, q_len as a
    facet: ``grid.facet_values``): time and memory exponents over all measured lengths and over
    the ``tail`` longest, next to the promise; ``flag`` when memory exceeds it by >
    MEMORY_SLACK."""
    rows = []
    ok = measured(latest(df))
    names = [k.name for k in series_keys(ok)]
    for key, g in ok.groupby(series_keys(ok), sort=False):
        series = dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True))
        g = g.sort_values("seq_len")
        n = g["seq_len"].to_numpy()
        promise = Promise.parse(g["promise"].iloc[0])
        time, memory = fit_power(n, g["time_median_ms"]), fit_power(n, g["peak_mem_bytes"])
        time_tail = fit_power(n[-tail:], g["time_median_ms"].to_numpy()[-tail:])
        memory_tail = fit_power(n[-tail:], g["peak_mem_bytes"].to_numpy()[-tail:])
        promised = promised_exponent(promise, n) if promise and len(set(n)) >= 2 else None
        flag = (
            memory is not None and promised is not None and memory.slope > promised + MEMORY_SLACK
        )
        rows.append(
            dict(
                **series,
                family=g["family"].iloc[0],
                time=time,
                time_tail=time_tail,
                memory=memory,
                memory_tail=memory_tail,
                promise=promise.text if promise else "",
                promised=promised,
                flag=flag,
            )
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Crossover:
    """From which measured length on a backend beats a reference, and where the curves cross."""

    first: int | None  # shortest measured length from which it wins at every longer one
    estimate: float | None  # log-log interpolated length where the ratio crosses 1
    lengths: tuple[int, ...]  # the lengths compared
    reference_failed: tuple[int, ...]  # lengths where only the reference did not finish

    def text(self) -> str:
        if not self.lengths:
            return "no common lengths"
        if self.first is None:
            return f"not within {self.lengths[0]}–{self.lengths[-1]}"
        if self.first == self.lengths[0]:
            return f"≤ {self.first} (wins at every length)"
        text = f"{self.first}"
        if self.estimate is not None:
            text += f" (≈ {self.estimate:.0f})"
        if self.first in self.reference_failed:
            text += " (reference did not finish)"
        return text


def crossover(lengths, ours, theirs, their_status) -> Crossover:
    """``ours``/``theirs``: the metric at ``lengths`` (NaN where not measured); a reference that
    ran out of memory or time where ours finished counts as a win for ours."""
    lengths = np.asarray(lengths)
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    failed = np.isin(np.asarray(their_status), list(FAILED))
    keep = np.isfinite(ours) & (np.isfinite(theirs) | failed)
    lengths, ours, theirs, failed = lengths[keep], ours[keep], theirs[keep], failed[keep]
    wins = failed | (ours < theirs)
    first = None
    for i in range(len(lengths) - 1, -1, -1):
        if not wins[i]:
            break
        first = int(lengths[i])
    estimate = None
    if first is not None and first != int(lengths[0]):
        i = int(np.flatnonzero(lengths == first)[0])
        if not failed[i] and np.isfinite(theirs[i - 1]):
            # log(ratio) is close to linear in log(n) between neighbouring lengths
            r0, r1 = np.log(ours[i - 1] / theirs[i - 1]), np.log(ours[i] / theirs[i])
            x0, x1 = np.log(lengths[i - 1]), np.log(lengths[i])
            estimate = float(np.exp(x0 + (x1 - x0) * r0 / (r0 - r1)))
    return Crossover(
        first, estimate, tuple(int(n) for n in lengths), tuple(int(n) for n in lengths[failed])
    )


def crossovers(df: pd.DataFrame) -> pd.DataFrame:
    """For each series that is not full attention (a sparse pattern or an approximation) against
    each full-attention series, per pass and point of the grid (its axes are columns too): where
    it becomes faster and where it uses less memory."""
    df = latest(df)
    rows = []
    names = [k.name for k in grid.keys(df, ("pass", *GRID_AXES))]
    for key, g in df.groupby(grid.keys(df, ("pass", *GRID_AXES)), sort=False):
        at = dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True))
        # full attention (any kernel) against everything else: the sparse patterns and the
        # approximations (dense in their own way, but not exact attention)
        full = [s for s in g["label"].unique() if _full(g, s)]
        sparse = [s for s in g["label"].unique() if not _full(g, s)]
        for s in sparse:
            for f in full:
                both = _aligned(g, s, f)
                rows.append(
                    dict(
                        label=s,
                        reference=f,
                        **at,
                        time=crossover(
                            both.index, both["t_ours"], both["t_ref"], both["status_ref"]
                        ),
                        memory=crossover(
                            both.index, both["m_ours"], both["m_ref"], both["status_ref"]
                        ),
                    )
                )
    return pd.DataFrame(rows)


def _full(g: pd.DataFrame, label: str) -> bool:
    row = g.loc[g["label"] == label].iloc[0]
    return row["family"] == "full" if "family" in g.columns else not bool(row["sparse"])


def _aligned(g: pd.DataFrame, ours: str, ref: str) -> pd.DataFrame:
    """Our series and the reference side by side, indexed by length (our measured lengths)."""
    a = measured(g[g["label"] == ours]).set_index("seq_len")
    b = g[g["label"] == ref].set_index("seq_len").reindex(a.index)
    ok = b["status"] == Status.OK
    return pd.DataFrame(
        {
            "t_ours": a["time_median_ms"],
            "m_ours": a["peak_mem_bytes"],
            "t_ref": b["time_median_ms"].where(ok),
            "m_ref": b["peak_mem_bytes"].where(ok),
            "status_ref": b["status"].fillna("missing"),
        }
    ).sort_index()


def relative_to(df: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Speedup (reference time / time) and memory saving (reference memory / memory) of every
    other series against the backend named ``reference``, at the lengths both measured, at the
    same pass and point of the grid (``yardstick_at`` matches them)."""
    df = measured(latest(df))
    others = df[df["backend"] != reference].copy()
    ref = yardstick_at(df, reference, others)
    if others.empty or ref["time_median_ms"].isna().all():
        return pd.DataFrame(columns=["label", "pass", "seq_len", "speedup", "memory_saving"])
    others["speedup"] = ref["time_median_ms"].to_numpy() / others["time_median_ms"]
    others["memory_saving"] = ref["peak_mem_bytes"].to_numpy() / others["peak_mem_bytes"].where(
        others["peak_mem_bytes"] > 0
    )
    return others.dropna(subset=["speedup"])


def yardstick_at(df: pd.DataFrame, reference: str, rows: pd.DataFrame) -> pd.DataFrame:
    """For each of ``rows``, the measured row of the backend ``reference`` in ``df`` at the same
    pass, length and point of the grid (the last of each case; its first variant where it has
    several), or a row of NaN: a frame aligned with ``rows``."""
    match = present(df, ("pass", "seq_len", *GRID_AXES))
    ref = measured(latest(df))
    ref = ref[ref["backend"] == reference].set_index(match)
    ref = ref[~ref.index.duplicated()]
    if ref.empty:
        return pd.DataFrame(np.nan, index=rows.index, columns=ref.columns)
    at = pd.MultiIndex.from_frame(rows[match]) if len(match) > 1 else pd.Index(rows[match[0]])
    return ref.reindex(at).set_axis(rows.index)


def with_rates(df: pd.DataFrame, device_name: str = "") -> pd.DataFrame:
    """Adds useful FLOPs, achieved TFLOP/s and (on a GPU of known peak) the fraction of it."""
    df = df.copy()
    seconds = df["time_median_ms"] / 1e3
    df["tflops"] = (df["flops"].astype(float) / seconds / 1e12).where(df["status"] == Status.OK)
    peak = flops.peak_tflops(device_name) if device_name else None
    df["peak_fraction"] = df["tflops"] / peak if peak else np.nan
    return df


def best_backends(df: pd.DataFrame) -> pd.DataFrame:
    """For each facet (``grid.facets``: mode and point of the varying grid axes, which are
    columns too) and length: the fastest measured backend (``label``, ``time_median_ms``), the
    runner-up (``runner_up``; NaN where one ran alone) and how many times slower it was
    (``ratio``)."""
    ok = measured(latest(df))
    ok = ok[ok["time_median_ms"] > 0]
    rows = []
    for facet, g in grid.facets(ok):
        for n, at in g.groupby("seq_len", sort=True):
            ranked = at.sort_values("time_median_ms", kind="stable")
            best, second = ranked.iloc[0], (ranked.iloc[1] if len(ranked) > 1 else None)
            rows.append({
                "pass": facet.pass_, **dict(facet.point), "seq_len": int(n),
                "label": best["label"], "time_median_ms": float(best["time_median_ms"]),
                "runner_up": second["label"] if second is not None else np.nan,
                "ratio": (second["time_median_ms"] / best["time_median_ms"]
                          if second is not None else np.nan),
            })  # fmt: skip
    axes = grid.varying_grid_axes(ok)
    return pd.DataFrame(rows, columns=["pass", *axes, "seq_len", "label", "time_median_ms",
                                       "runner_up", "ratio"])  # fmt: skip
