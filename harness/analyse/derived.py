"""The derived columns of results.csv (``records.DERIVED``, ``records.DERIVED_PREFIXES``), from
the stored ones alone: what a finished sweep appends to its results and ``export`` writes.

- ``tflops``: useful TFLOP/s, the row's ``flops`` over its median time; ``peak_fraction``: that
  over the GPU's dense half-precision peak (``flops.peak_tflops``), where it is known;
- for each full-attention yardstick Y of the run (``analysis.yardsticks``),
  ``speedup_vs_Y`` and ``memory_saving_vs_Y``: Y's median time (peak memory) over the row's, at
  the same pass, length and point of the grid, from Y's last row there. A row that did not
  finish, or a point where Y did not, has none (NaN); Y's own last row has 1.

Every row gets them, earlier rows of a case (``--resume``, re-measurement rounds) included.
"""

from __future__ import annotations

import pandas as pd

from harness.analyse import analysis
from harness.store.records import Status, is_derived


def derived_columns(df: pd.DataFrame, device_name: str = "") -> pd.DataFrame:
    """``df`` without any derived columns it had, then with them recomputed (in that order:
    ``tflops``, ``peak_fraction``, then per yardstick its speedup and memory saving)."""
    stored = df[[c for c in df.columns if not is_derived(c)]]
    out = analysis.with_rates(stored, device_name)
    ok = out["status"] == Status.OK
    memory = out["peak_mem_bytes"].where(out["peak_mem_bytes"] > 0)
    for yardstick in analysis.yardsticks(stored):
        theirs = analysis.yardstick_at(stored, yardstick, out)
        out[f"speedup_vs_{yardstick}"] = (theirs["time_median_ms"] / out["time_median_ms"]).where(
            ok
        )
        out[f"memory_saving_vs_{yardstick}"] = (theirs["peak_mem_bytes"] / memory).where(ok)
    return out
