"""The result record: one row of ``results.csv`` per case."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from harness.store import distributions

# The version of results.csv and meta.json this harness writes (meta.json's ``format_version``):
# 1: every run before format versions (no version key).
# 2: rows carry their family's facts, ``flops``, ``promise``, ``sparse`` and ``yardstick``; a
#    run of format 1 is upgraded when it is read (``runs.load_run``) where the backends import.
# 3: one word per meaning: the matmul timed beside every case to gauge the machine's speed is the
#    "calibration", no longer the "reference operation" ("reference" is the dense reference
#    only). Its columns and meta.json entry are renamed (``RENAMED_COLUMNS``, ``RENAMED_META``);
#    older runs are renamed as they are read (``storage``), without torch.
# 4: a run sweeps a grid: rows differ in batch, heads, head_dim, dtype and seed too, and carry
#    the problem's other axes, ``q_len`` (queries; the keys are ``seq_len``), ``kv_heads``,
#    ``documents`` and ``causal`` (``GRID_AXES``; all in the case key). The ``pass`` column
#    holds a mode: fwd, fwd-grad, bwd or fwdbwd. Once a sweep ends, results.csv also holds the
#    derived columns (``DERIVED``), recomputed from the others whenever it is rewritten. Older
#    runs read as a grid of one point (``upgrade_axes``).
# 5: issue 16, the X-former zoo: a grid axis ``inputs``, the distribution q, k and v were drawn
#    from (``distributions.NAMES``: "gaussian" or "structured"; in the case key), and a fact
#    column ``implementation``, whose code the backend runs ("ours", or a peer's package such as
#    "transformers"). Older runs read as inputs "gaussian" and implementation "ours"
#    (``ADDED_COLUMNS``, filled in by ``storage`` as they are read), without torch.
# 6: a fact column ``pattern``: what the backend computes, as JSON, its family and the values of
#    all the family's parameters (``AttentionBackend.pattern_json``), so that reports compare
#    only implementations of one pattern (lucidrains' blocks are BigBird without global and
#    random blocks; HF's Reformer is ours with HF's conventions). Older runs read as pattern ""
#    (``ADDED_COLUMNS``): compared within their family, as they were.
FORMAT_VERSION = 6
RENAMED_COLUMNS = {"process_ref_ms": "process_calibration_ms",
                   "process_ref_cpu_ms": "process_calibration_cpu_ms",
                   "ref_drift": "calibration_drift"}  # fmt: skip
RENAMED_META = {"reference_op": "calibration"}
FACT_COLUMNS = ("flops", "promise", "sparse", "yardstick", "implementation", "pattern")
# The columns formats 5 and 6 added: for each, the column it follows and what an older run
# reads as there (every case then was ours, drawn from the standard normal; its pattern
# unrecorded)
ADDED_COLUMNS = {
    "inputs": ("causal", distributions.DEFAULT),
    "implementation": ("yardstick", "ours"),
    "pattern": ("implementation", ""),
}


def has_facts(columns: Iterable[str]) -> bool:
    """Whether rows with these columns carry their family's facts (format 2 on; format 5's
    ``implementation`` is filled in for older runs as they are read: ``ADDED_COLUMNS``)."""
    return all(c in columns for c in FACT_COLUMNS)


class Status(StrEnum):
    """What became of a case: every row has one (stored as its value)."""

    OK = "ok"  # measured; its output check may still have failed (the reason says so)
    SKIPPED = "skipped"  # not run, for the reason given (device, dtype, memory, an earlier failure)
    OOM = "oom"  # ran out of memory
    ERROR = "error"  # raised, or its process died
    TIMEOUT = "timeout"  # stopped at the case time limit


FAILED = frozenset({Status.OOM, Status.ERROR, Status.TIMEOUT})  # ran and did not finish

# The largest error against the dense reference that passes the output check, per dtype name;
# 1e-2 for any other.
CHECK_TOLERANCE = {"float64": 1e-8, "float32": 1e-4, "float16": 2e-2, "bfloat16": 6e-2}


def check_tolerance(dtype: str) -> float:
    return CHECK_TOLERANCE.get(dtype, 1e-2)


# How a row's reason begins when its output check failed (the row is "ok": it was measured),
# and when the case was skipped because its memory was predicted not to fit
CHECK_FAILED = "CHECK FAILED"
PREDICTED_TOO_LARGE = "predicted"


def check_failed(reason: object) -> bool:
    return isinstance(reason, str) and reason.startswith(CHECK_FAILED)


def predicted_too_large(reason: object) -> bool:
    return isinstance(reason, str) and reason.startswith(PREDICTED_TOO_LARGE)


# How the processes of a case measured in several (``--processes K``) make its one row: each
# field says so in its metadata, and ``harness.sweep.repeats`` applies it:
# - "case": the case's description and its family's facts, the same whatever was measured;
# - "same": the same in every process; "reason": the first process's that has one;
# - "median", "max", "min", "sum" of the processes' values; "join": every process's values, in
#   order (space-separated columns); "iqr" and "count" of every process's samples of ``of``.
def _case() -> Any:
    return dataclasses.field(metadata={"combine": "case"})


def _combined(how: str, default: Any = None, of: str | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"combine": how, "of": of})


def combine_rule(field: dataclasses.Field) -> tuple[str, str | None]:
    """How the processes' values of a ``CaseResult`` field make the row's: (rule, ``of``)."""
    return field.metadata["combine"], field.metadata.get("of")


@dataclass(frozen=True)
class CaseResult:
    backend: str = _case()
    family: str = _case()
    label: str = _case()  # name and key parameters, for tables and legends
    params: str = _case()  # the backend's parameters as compact JSON
    seq_len: int = _case()
    pass_: str = _case()  # "fwd" or "fwdbwd"; the column is named "pass"
    batch: int = _case()
    heads: int = _case()
    head_dim: int = _case()
    dtype: str = _case()
    device: str = _case()
    seed: int = _case()
    q_len: int = _case()  # queries (the last q_len positions); seq_len is the keys
    kv_heads: int = _case()  # key/value heads (fewer than heads: grouped-query attention)
    documents: int = _case()  # packed documents, attended within each only
    causal: bool = _case()  # the problem's: keys j <= i only
    inputs: str = _case()  # the distribution q, k, v were drawn from (``distributions.NAMES``)
    # a process that did not finish ends the case
    status: Status = dataclasses.field(metadata={"combine": "same"})
    reason: str = _combined("reason", "")
    # the median of the processes' medians: robust to one process caught in a slow stretch
    time_median_ms: float | None = _combined("median")
    time_iqr_ms: float | None = _combined("iqr", of="time_samples_ms")  # within and between
    repeats: int | None = _combined("count", of="time_samples_ms")
    # calls before timing, until two agreed (the first included)
    warmup_calls: int | None = _combined("max")
    # per-shape setup (index tables, block masks), paid once
    prepare_ms: float | None = _combined("median")
    # the first call: initialisation and any compilation
    first_call_ms: float | None = _combined("median")
    # every sample, space separated, for later statistics
    time_samples_ms: str = _combined("join", "")
    # Each process's median, and the calibration's median timed in that process just
    # before and after the case (``harness.measure.calibration``): machine speed at the case's time
    process_medians_ms: str = _combined("join", "")
    process_calibration_ms: str = _combined("join", "")
    calibration_drift: float | None = _combined("max")  # |after / before - 1| of that reference
    # CPU time of the process (all threads) per call: median, IQR, samples, per process, and
    # the calibration's CPU time per process; empty on CUDA
    cpu_median_ms: float | None = _combined("median")
    cpu_iqr_ms: float | None = _combined("iqr", of="cpu_samples_ms")
    cpu_samples_ms: str = _combined("join", "")
    process_cpu_medians_ms: str = _combined("join", "")
    process_calibration_cpu_ms: str = _combined("join", "")
    # The machine while the case was timed (``harness.measure.conditions``), worst process: the
    # share of all CPUs other processes used, the share the hypervisor stole, the 1-minute load
    # average, the CPU clock; on CUDA the GPU's clock and temperature
    other_cpu: float | None = _combined("max")
    steal: float | None = _combined("max")
    load_avg: float | None = _combined("max")
    cpu_mhz: float | None = _combined("min")
    gpu_clock_mhz: float | None = _combined("min")
    gpu_temp_c: float | None = _combined("max")
    peak_mem_bytes: int | None = _combined("median")
    # vs dense attention restricted to the backend's own mask; the worst process: a check that
    # failed anywhere failed
    max_err: float | None = _combined("max")
    err_vs_full: float | None = _combined(
        "median"
    )  # relative, vs full attention: what sparsity costs
    check_rows: int | None = _combined("same")  # query rows the two errors were measured on
    threads: int | None = _combined("same")
    wall_s: float | None = _combined("sum")  # the whole case, setup and checks included
    # 1, or the re-measurement round of ``--compare-to`` that wrote this row (the case's
    # last row is the one that stands)
    round: int = _combined("case", 1)
    # Facts of the backend's family, stored so that analysis needs no backend (format 2):
    flops: float | None = _combined("case")  # useful FLOPs of one call (``harness.measure.flops``)
    promise: str = _combined("case", "")  # promised cost as n grows, ``facts.Promise`` text
    sparse: bool | None = _combined("case")  # attends a subset of the pairs (crossovers: vs full)
    yardstick: bool | None = _combined("case")  # a full-attention backend others are measured by
    # whose code: "ours", or the package a peer backend drives (format 5)
    implementation: str = _combined("case", "ours")
    # what it computes: family and parameters, JSON (format 6; "" before)
    pattern: str = _combined("case", "")

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
    medians and the calibration's time per process."""

    name: str
    median: str
    iqr: str
    samples: str
    process_medians: str
    process_calibration: str
    run_calibration: str  # the key of the run's calibration time in meta.json's calibration entries


METRICS = {
    "wall": Metric("wall", "time_median_ms", "time_iqr_ms", "time_samples_ms",
                   "process_medians_ms", "process_calibration_ms", "median_ms"),
    "cpu": Metric("cpu", "cpu_median_ms", "cpu_iqr_ms", "cpu_samples_ms",
                  "process_cpu_medians_ms", "process_calibration_cpu_ms", "cpu_median_ms"),
}  # fmt: skip

COLUMNS = [("pass" if f.name == "pass_" else f.name) for f in dataclasses.fields(CaseResult)]
# What identifies a case: its backend and parameters, the pass, the length, and the run axes,
# which every row of one run shares (a sweep varies the rest; ``storage`` refuses a mix)
# The axes of the problem a sweep may vary besides the length (a grid), and those every row of
# one run shares (``storage`` refuses a mix)
GRID_AXES = ("batch", "heads", "head_dim", "dtype", "seed", "q_len", "kv_heads", "documents",
             "causal", "inputs")  # fmt: skip
RUN_AXES = ("device",)
CASE_KEY = ("backend", "params", "seq_len", "pass", *GRID_AXES, *RUN_AXES)
_INTEGER_KEYS = ("seq_len", "batch", "heads", "head_dim", "seed", "q_len", "kv_heads", "documents")
# Columns a finished sweep adds to results.csv, derived from the others (analyse.derived):
# useful TFLOP/s, its fraction of the device's peak, and per full-attention yardstick Y of the
# run, Y's time (peak memory) over the case's at the same point of the grid
DERIVED = ("tflops", "peak_fraction")
DERIVED_PREFIXES = ("speedup_vs_", "memory_saving_vs_")


def is_derived(column: str) -> bool:
    return column in DERIVED or column.startswith(DERIVED_PREFIXES)


def case_key(row: Mapping[str, Any]) -> tuple:
    """The key of a row (``CaseResult.row()``, or a row read back from results.csv)."""
    return tuple(_key_value(c, row[c]) for c in CASE_KEY)


def _key_value(column: str, value: Any) -> Any:
    if column in _INTEGER_KEYS:
        return int(value)
    if column == "causal":  # True, "True", "true" alike
        return str(value).lower() == "true"
    return str(value)


def upgrade_axes(row: dict[str, Any]) -> dict[str, Any]:
    """A row of a run before format 4 as one of a grid of one point: its queries are its keys,
    as many key/value heads as heads, one document; causal as its backend's parameter."""
    if "q_len" in row:
        return row
    import json

    try:
        causal = bool(json.loads(row.get("params") or "{}").get("causal", False))
    except (ValueError, AttributeError):
        causal = False
    return {**row, "q_len": row["seq_len"], "kv_heads": row["heads"], "documents": 1,
            "causal": causal}  # fmt: skip
