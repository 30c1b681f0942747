"""The figures the GPU check reports (``run_bench.py gpu-check``), from stored rows only:

- a measured rate with its spread (``rate``): useful TFLOP/s at the median time, and at the
  quartiles' times;
- for each sparse family, its best implementation's useful TFLOP/s as a fraction of the
  yardstick's (SDPA's flash kernel) at one length and at the longest length it reached
  (``best_fractions``);
- each backend's memory exponent over the lengths from one on (``memory_exponents``);
- the shortest length at which a backend ran out of memory (``memory_limit``).

A case whose output check failed counts as not measured: a wrong answer is no rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analyse.analysis import Fit, fit_power, latest, measured, with_rates
from harness.store.records import Status, check_failed, predicted_too_large

YARDSTICK = "sdpa-flash"


@dataclass(frozen=True)
class Rate:
    """Useful TFLOP/s at the median time, and at the first and third quartiles' times."""

    median: float
    low: float  # at the slower quartile
    high: float  # at the faster quartile

    def text(self) -> str:
        return f"{self.median:.3g} TFLOP/s ({self.low:.3g}-{self.high:.3g} over the IQR)"


def rate(row: pd.Series) -> Rate | None:
    """The rate of a measured row whose output passed its check (None otherwise)."""
    if row["status"] != Status.OK or check_failed(row.get("reason")):
        return None
    flops, median, iqr = float(row["flops"]), float(row["time_median_ms"]), row["time_iqr_ms"]
    if not (math.isfinite(flops) and median > 0):
        return None
    spread = float(iqr) if pd.notna(iqr) else 0.0
    at = lambda ms: flops / (ms / 1e3) / 1e12  # noqa: E731
    slow, fast = median + spread / 2, max(median - spread / 2, median / 1e3)
    return Rate(at(median), at(slow), at(fast))


def _trusted(df: pd.DataFrame) -> pd.DataFrame:
    """The last row of each case, measured, its check passed."""
    rows = measured(latest(df))
    return rows[~rows["reason"].map(check_failed)]


def best_fractions(df: pd.DataFrame, at: int, yardstick: str = YARDSTICK) -> pd.DataFrame:
    """Per sparse family and pass: its fastest implementation (by useful TFLOP/s) at length
    ``at`` and at the longest length the family reached, each as a fraction of ``yardstick``'s
    rate at that length and pass (NaN where the yardstick has no trusted row there)."""
    rows = with_rates(_trusted(df))
    ref = rows[rows["backend"] == yardstick].set_index(["pass", "seq_len"])["tflops"]
    ref = ref[~ref.index.duplicated()]
    out = []
    sparse = rows[rows["sparse"].fillna(False).astype(bool)]
    for (family, pass_), g in sparse.groupby(["family", "pass"], sort=True):
        for where, n in (("at", at), ("longest", int(g["seq_len"].max()))):
            here = g[g["seq_len"] == n]
            if here.empty:
                continue
            best = here.loc[here["tflops"].idxmax()]
            theirs = ref.get((pass_, n), np.nan)
            out.append(dict(family=family, pass_=pass_, where=where, seq_len=n,
                            backend=best["label"], tflops=best["tflops"], yardstick=theirs,
                            fraction=best["tflops"] / theirs))  # fmt: skip
    columns = ["family", "pass", "where", "seq_len", "backend", "tflops", "yardstick", "fraction"]
    return pd.DataFrame(out).rename(columns={"pass_": "pass"}).reindex(columns=columns)


def memory_exponents(df: pd.DataFrame, from_length: int) -> pd.DataFrame:
    """Per series and pass: the log-log slope of peak memory over the lengths >= ``from_length``
    it measured (``fit`` None with fewer than two)."""
    rows = _trusted(df)
    rows = rows[rows["seq_len"] >= from_length]
    out = []
    for (label, pass_), g in rows.groupby(["label", "pass"], sort=True):
        g = g.sort_values("seq_len")
        fit: Fit | None = fit_power(g["seq_len"].to_numpy(), g["peak_mem_bytes"].to_numpy())
        out.append(dict(label=label, pass_=pass_, fit=fit, promise=g["promise"].iloc[0]))
    return pd.DataFrame(out, columns=["label", "pass_", "fit", "promise"]).rename(
        columns={"pass_": "pass"}
    )


def memory_limit(df: pd.DataFrame, backend: str) -> dict[str, tuple[int, str] | None]:
    """Per pass: the shortest length at which ``backend`` ran out of memory, or was skipped
    because it was predicted not to fit, and which of the two (None: neither, at the lengths
    run)."""
    rows = latest(df)
    rows = rows[rows["backend"] == backend]
    out: dict[str, tuple[int, str] | None] = {}
    for pass_, g in rows.groupby("pass", sort=True):
        oom = g["status"] == Status.OOM
        predicted = (g["status"] == Status.SKIPPED) & g["reason"].map(predicted_too_large)
        hit = g[oom | predicted].sort_values("seq_len")
        if hit.empty:
            out[pass_] = None
            continue
        first = hit.iloc[0]
        how = "out of memory" if first["status"] == Status.OOM else "predicted not to fit"
        out[pass_] = (int(first["seq_len"]), how)
    return out
