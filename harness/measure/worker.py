"""One case, run inside its own process: support check, memory, correctness, timing.

A fresh process per case makes the CPU memory peak its own, and turns a crash or an
out-of-memory kill into a row instead of the end of the sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
import traceback
from functools import cache
from typing import Any

import torch

from harness.measure.calibration import time_calibration
from harness.measure.case import Case
from harness.measure.conditions import Window
from harness.measure.inputs import dtype_name
from harness.measure.memory import (
    available_bytes,
    limit_address_space,
    malloc_for_measuring,
    malloc_for_timing,
    peak_bytes,
)
from harness.measure.reference import check_rows, exact_mask, masked_attention
from harness.measure.timing import WarmUp, measure, median_iqr, timed_call
from harness.store.records import (
    CHECK_FAILED,
    METRICS,
    PREDICTED_TOO_LARGE,
    Metric,
    Status,
    check_tolerance,
)

# Largest error against the float64/float32 reference that still counts as rounding.
CHECK_ELEMENTS = 2**26  # cap on the reference's [B, H, M, N] score matrix


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def mode_call(mode: str, fn, q, k, v, grad_out):
    """The call a mode times, returning ``(output, gradients or None)``:

    - ``fwd``: the forward, inputs without autograd (inference);
    - ``fwd-grad``: the forward with autograd recording its graph (as in training);
    - ``bwd``: the backward alone, through the graph of one forward done here, untimed (kept
      with ``retain_graph`` so that every call walks the same graph, as tritonbench's bwd);
    - ``fwdbwd``: forward and backward.
    """
    if mode in ("fwd", "fwd-grad"):
        return lambda: (fn(q, k, v), None)
    if mode == "bwd":
        out = fn(q, k, v)
        return lambda: (out, torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True,
                                                 allow_unused=True))  # fmt: skip
    if mode == "fwdbwd":

        def call():
            out = fn(q, k, v)
            return out, torch.autograd.grad(out, (q, k, v), grad_out, allow_unused=True)

        return call
    raise ValueError(f"unknown mode {mode!r}")


def check_output(case: Case, out, q, k, v) -> dict[str, Any]:
    """Compare the output on a sample of query rows with the dense references."""
    inputs, backend = case.inputs, case.backend
    b, h, m, _ = inputs.shape
    count = max(8, min(case.check_rows, CHECK_ELEMENTS // (b * h * inputs.seq_len)))
    rows = check_rows(m, count, inputs.seed).to(q.device)  # of the M queries
    with torch.no_grad():
        q, k, v = q.detach(), k.detach(), v.detach()
        out = out.detach()[:, :, rows].double()  # [B, H, rows, D]
        ref = backend.reference(inputs, q, k, v, rows).double()
        # exact attention of the same problem: causal and within documents where the case is
        full = masked_attention(q, k, v, exact_mask(inputs, rows), rows).double()
    max_err = (out - ref).abs().max().item()
    return {
        "max_err": max_err,
        "err_vs_full": ((out - full).norm() / full.norm()).item(),
        "check_rows": len(rows),
        "check_ok": max_err <= check_tolerance(dtype_name(inputs.dtype)),
    }


def _clock_fields(clock: Metric, seconds: list[float], before: dict, after: dict) -> dict:
    """One clock's columns (``records.METRICS``): median, IQR and samples of this process, and
    the calibration's time in the same clock, the mean of before and after the case."""
    median, iqr = median_iqr(seconds)
    ref = (before[clock.run_calibration] + after[clock.run_calibration]) / 2
    return {
        clock.median: median * 1e3,
        clock.iqr: iqr * 1e3,
        clock.samples: " ".join(f"{s * 1e3:.6g}" for s in seconds),
        clock.process_medians: f"{median * 1e3:.6g}",
        clock.process_calibration: f"{ref:.6g}",
    }


def run_case(case: Case) -> dict[str, Any]:
    """Measure one case; returns the fields of its row (status, reason, numbers)."""
    inputs, backend = case.inputs, case.backend
    device = inputs.device
    reasons = backend.not_supported_reasons(inputs)
    if reasons:
        return {"status": Status.SKIPPED, "reason": "; ".join(reasons)}
    free = available_bytes(device)
    need = backend.estimate_bytes(inputs) + inputs.qkv_bytes() * (2 if inputs.requires_grad else 1)
    if free is not None and need > free:
        return {
            "status": Status.SKIPPED,
            "reason": f"{PREDICTED_TOO_LARGE} {need / 2**30:.1f} GiB > {free / 2**30:.1f} GiB free",
        }
    if torch.device(device).type == "cpu" and free is not None:
        limit_address_space(free)

    malloc_for_measuring()  # the first call and the memory call: freed memory leaves at once
    q, k, v = inputs.make_qkv()
    prepare_s, fn = timed_call(lambda: backend.prepare(inputs), device)  # per shape, paid once
    call = mode_call(case.pass_, fn, q, k, v, inputs.make_grad_out())
    first_s, _ = timed_call(call, device)  # lazy initialisation, compilation: never measured
    peak, (out, _) = peak_bytes(call, device)
    check = check_output(case, out, q, k, v)
    del out
    malloc_for_timing()  # after the memory measurement's allocator setting (harness.measure.memory)
    before = time_calibration(device)
    with Window(device) as window:
        samples, warm = measure(call, device, case.timing, WarmUp((first_s,)))
    after = time_calibration(device)
    result = {
        "status": Status.OK,
        "repeats": len(samples.wall),
        "prepare_ms": prepare_s * 1e3,
        "first_call_ms": first_s * 1e3,
        "warmup_calls": warm.calls,
        **_clock_fields(METRICS["wall"], samples.wall, before, after),
        # CPU time: on CPU only (on CUDA the GPU's time is what counts)
        **(_clock_fields(METRICS["cpu"], samples.cpu, before, after) if samples.cpu else {}),
        # the reference's own change across the case: the machine changing speed meanwhile
        "calibration_drift": abs(after["median_ms"] / before["median_ms"] - 1),
        **window.conditions.fields(),
        "peak_mem_bytes": peak,
        **{k: check[k] for k in ("max_err", "err_vs_full", "check_rows")},
    }
    if not check["check_ok"]:
        result["reason"] = (
            f"{CHECK_FAILED}: max error {check['max_err']:.3g} vs dense masked reference exceeds "
            f"{check_tolerance(dtype_name(inputs.dtype)):g} for {dtype_name(inputs.dtype)}"
        )
    return result


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sweep_pid: int) -> None:
    """Have the kernel kill this process when its parent, the forkserver, exits: the server
    exits when the sweep does (kill -9 included), so no case outlives its sweep and skews the
    next one's numbers. A sweep already gone before this took effect ends the case here."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        os.kill(sweep_pid, 0)
    except ProcessLookupError:
        os._exit(1)
    except PermissionError:  # alive, under another user: not ours to judge
        pass


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def child_main(case: Case, conn, threads: int | None, sweep_pid: int) -> None:
    """Entry point of the case's process: sends one dict through ``conn``."""
    die_with_parent(sweep_pid)
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = run_case(case)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the sweep is stopping
        return
    except BaseException as exc:  # a failing case becomes a row; the sweep goes on
        status = Status.OOM if is_oom(exc) else Status.ERROR
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
        result = {"status": status, "reason": f"{type(exc).__name__}: {first}{at}"[:500]}
    result["threads"] = torch.get_num_threads()
    result["wall_s"] = time.perf_counter() - start
    with contextlib.suppress(OSError):  # a sweep stopped meanwhile no longer listens
        conn.send(result)
        conn.close()
