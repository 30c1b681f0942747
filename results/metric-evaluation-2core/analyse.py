"""How far a busy machine moves each metric, and how much the processes disagree.

Reads the four run folders beside this file (the CI check's ten cases, quiet and busy, on one
and two threads) and prints, per threads x metric: the busy/quiet ratio of each case's median
of process medians (least, median, largest over the ten cases) and the coefficient of
variation of the five process medians (median and largest over the cases), quiet and busy.
Run from the repository root: python results/metric-evaluation-2core/analyse.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
METRICS = {"wall": ("process_medians_ms", "process_ref_ms"),
           "cpu": ("process_cpu_medians_ms", "process_ref_cpu_ms")}  # fmt: skip


def process_values(run: str, column: str, ref: str | None) -> dict:
    rows = pd.read_csv(HERE / run / "results.csv", keep_default_na=False)
    out = {}
    for _, r in rows.iterrows():
        v = np.array(str(r[column]).split(), dtype=float)
        if ref:
            v = v / np.array(str(r[ref]).split(), dtype=float)
        out[(r["backend"], r["pass"])] = v
    return out


def cv(v: np.ndarray) -> float:
    return float(np.std(v) / np.mean(v))


rows = []
for threads in ("1t", "2t"):
    for metric, (column, ref_column) in METRICS.items():
        for normalised in (False, True):
            ref = ref_column if normalised else None
            quiet = process_values(f"quiet-{threads}", column, ref)
            busy = process_values(f"busy-{threads}", column, ref)
            ratios = [np.median(busy[k]) / np.median(quiet[k]) for k in quiet]
            rows.append({
                "threads": threads[0], "metric": metric + (", normalised" if normalised else ""),
                "busy/quiet: least": min(ratios), "median": np.median(ratios),
                "largest": max(ratios),
                "CV quiet: median": np.median([cv(v) for v in quiet.values()]),
                "largest ": max(cv(v) for v in quiet.values()),
                "CV busy: median": np.median([cv(v) for v in busy.values()]),
                "largest  ": max(cv(v) for v in busy.values()),
            })  # fmt: skip
print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))
