"""The result record: one row of ``results.csv`` per case."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

STATUSES = ("ok", "skipped", "oom", "error", "timeout")


@dataclass(frozen=True)
class CaseResult:
    backend: str
    family: str
    label: str  # name and key parameters, for tables and legends
    params: str  # the backend's parameters as compact JSON
    seq_len: int
    pass_: str  # "fwd" or "fwdbwd"; the column is named "pass"
    batch: int
    heads: int
    head_dim: int
    dtype: str
    device: str
    seed: int
    status: str
    reason: str = ""
    time_median_ms: float | None = None
    time_iqr_ms: float | None = None
    repeats: int | None = None
    warmup_calls: int | None = None  # calls before timing, until two agreed (the first included)
    prepare_ms: float | None = None  # per-shape setup (index tables, block masks), paid once
    first_call_ms: float | None = None  # the first call: initialisation and any compilation
    time_samples_ms: str = ""  # every sample, space separated, for later statistics
    # Each process's median, and the reference operation's median timed in that process just
    # before and after the case (``harness.reference_op``): machine speed at the case's time
    process_medians_ms: str = ""
    process_ref_ms: str = ""
    peak_mem_bytes: int | None = None
    max_err: float | None = None  # vs dense attention restricted to the backend's own mask
    err_vs_full: float | None = None  # relative error vs full attention: what sparsity costs
    check_rows: int | None = None  # how many query rows the two errors were measured on
    threads: int | None = None
    wall_s: float | None = None  # time the whole case took, setup and checks included

    def row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pass"] = d.pop("pass_")
        return {c: d[c] for c in COLUMNS}


def parse_floats(text: object) -> list[float]:
    """The numbers of a space-separated column (``time_samples_ms``, ``process_*_ms``); none
    for an empty or missing field."""
    return [float(x) for x in text.split()] if isinstance(text, str) else []


COLUMNS = [("pass" if f.name == "pass_" else f.name) for f in dataclasses.fields(CaseResult)]
KEY_COLUMNS = ["backend", "params", "seq_len", "pass", "batch", "heads", "head_dim", "dtype",
               "device", "seed"]  # fmt: skip
