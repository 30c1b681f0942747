"""``run_bench.py export RUN_DIR``: a run as one JSON file for notebooks and dashboards, read
from its stored files alone.

``results.json`` is a list with one object per case (the last row of each), so that
``pandas.read_json("RUN_DIR/results.json")`` loads it in one line. Each object holds the case's
stored columns (its point of the grid among them: batch, heads, head_dim, dtype, seed, q_len,
kv_heads, documents, causal, inputs; whose code among its family's facts: implementation), the
figures derived from them (``harness.analyse.derived``, the
same columns a finished sweep adds to results.csv), and the run's description:

- ``tflops``: useful TFLOP/s (``harness.measure.flops``'s count over the median time);
  ``peak_fraction``: of the GPU's dense half-precision peak, where it is known;
- ``speedup_vs_<yardstick>`` and ``memory_saving_vs_<yardstick>`` for each full-attention
  yardstick of the run: its median time (peak memory) over this case's, at the same pass,
  length and point of the grid (1 for the yardstick itself);
- ``run_<key>``: the run's ``created``, ``command``, ``git_commit``, ``device``,
  ``device_name``, ``torch`` and ``python`` from meta.json (all of meta.json stays beside it).

Numbers that do not exist (a case that did not run, a yardstick that did not finish) are
``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.analyse import analysis
from harness.analyse.derived import derived_columns
from harness.store import runs

EXPORT = "results.json"
RUN_FIELDS = ("created", "command", "git_commit", "device", "device_name", "torch", "python")


def table(run_dir: Path) -> pd.DataFrame:
    """The run's cases with the derived columns and the run's description."""
    df, meta = runs.load_run(run_dir)
    df = derived_columns(analysis.latest(df), str(meta.get("device_name", "")))
    for key in RUN_FIELDS:
        df[f"run_{key}"] = meta.get(key)
    return df


def _plain(value: object) -> object:
    """JSON's value for a cell: null for NaN and None, Python numbers for numpy's."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # a numpy scalar
        return _plain(value.item())
    return value


def write(run_dir: Path, out: Path | None = None) -> Path:
    """Write the export (``RUN_DIR/results.json`` unless ``out``); returns its path."""
    frame = table(run_dir)
    cases = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    path = out or Path(run_dir) / EXPORT
    path.write_text(json.dumps(cases, indent=1, allow_nan=False) + "\n")
    return path
