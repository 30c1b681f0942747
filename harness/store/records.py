"""The result record: one row of ``results.csv`` per case."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The version of results.csv and meta.json this harness writes (meta.json's ``format_version``):
# 1: every run before format versions (no version key).
# 2: rows carry their family's facts, ``flops``, ``promise``, ``sparse`` and ``yardstick``; a
#    run of format 1 is upgraded when it is read (``runs.load_run``) where the backends import.
FORMAT_VERSION = 2
FACT_COLUMNS = ("flops", "promise", "sparse", "yardstick")


def has_facts(columns: Iterable[str]) -> bool:
    """Whether rows with these columns carry their family's facts (format 2 on)."""
    return all(c in columns for c in FACT_COLUMNS)


STATUSES = ("ok", "skipped", "oom", "error", "timeout")

# The largest error against the dense reference that passes the output check, per dtype name;
# 1e-2 for any other.
CHECK_TOLERANCE = {"float64": 1e-8, "float32": 1e-4, "float16": 2e-2, "bfloat16": 6e-2}


def check_tolerance(dtype: str) -> float:
    return CHECK_TOLERANCE.get(dtype, 1e-2)


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
    # before and after the case (``harness.measure.reference_op``): machine speed at the case's time
    process_medians_ms: str = ""
    process_ref_ms: str = ""
    ref_drift: float | None = None  # |after / before - 1| of that reference, worst process
    # CPU time of the process (all threads) per call: median, IQR, samples, per process, and
    # the reference operation's CPU time per process; empty on CUDA
    cpu_median_ms: float | None = None
    cpu_iqr_ms: float | None = None
    cpu_samples_ms: str = ""
    process_cpu_medians_ms: str = ""
    process_ref_cpu_ms: str = ""
    # The machine while the case was timed (``harness.measure.conditions``), worst process: the
    # share of all CPUs other processes used, the share the hypervisor stole, the 1-minute load
    # average, the CPU clock; on CUDA the GPU's clock and temperature
    other_cpu: float | None = None
    steal: float | None = None
    load_avg: float | None = None
    cpu_mhz: float | None = None
    gpu_clock_mhz: float | None = None
    gpu_temp_c: float | None = None
    peak_mem_bytes: int | None = None
    max_err: float | None = None  # vs dense attention restricted to the backend's own mask
    err_vs_full: float | None = None  # relative error vs full attention: what sparsity costs
    check_rows: int | None = None  # how many query rows the two errors were measured on
    threads: int | None = None
    wall_s: float | None = None  # time the whole case took, setup and checks included
    # 1, or the re-measurement round of ``--check-against`` that wrote this row (the case's
    # last row is the one that stands)
    round: int = 1
    # Facts of the backend's family, stored so that analysis needs no backend (format 2):
    flops: float | None = None  # useful FLOPs of one call (``harness.measure.flops``)
    promise: str = ""  # promised cost as n grows, ``facts.Promise`` text: "O(n log n)"
    sparse: bool | None = None  # attends a subset of the pairs (crossovers are against full)
    yardstick: bool | None = None  # a full-attention backend the others are measured against

    def row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pass"] = d.pop("pass_")
        return {c: d[c] for c in COLUMNS}


def parse_floats(text: object) -> list[float]:
    """The numbers of a space-separated column (``time_samples_ms``, ``process_*_ms``); none
    for an empty or missing field."""
    return [float(x) for x in text.split()] if isinstance(text, str) else []


@dataclass(frozen=True)
class Metric:
    """Which time a row holds for each clock: the columns of its median, IQR, samples, process
    medians and the reference operation's time per process."""

    name: str
    median: str
    iqr: str
    samples: str
    process_medians: str
    process_ref: str
    run_ref: str  # the key of the run's reference time in meta.json's reference_op entries


METRICS = {
    "wall": Metric("wall", "time_median_ms", "time_iqr_ms", "time_samples_ms",
                   "process_medians_ms", "process_ref_ms", "median_ms"),
    "cpu": Metric("cpu", "cpu_median_ms", "cpu_iqr_ms", "cpu_samples_ms",
                  "process_cpu_medians_ms", "process_ref_cpu_ms", "cpu_median_ms"),
}  # fmt: skip

COLUMNS = [("pass" if f.name == "pass_" else f.name) for f in dataclasses.fields(CaseResult)]
KEY_COLUMNS = ["backend", "params", "seq_len", "pass", "batch", "heads", "head_dim", "dtype",
               "device", "seed"]  # fmt: skip
