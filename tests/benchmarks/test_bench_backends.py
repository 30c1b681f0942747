"""pytest-benchmark suite over the backend registry: every backend at a few small lengths, forward
(``fwd``) and forward + backward (``fwdbwd``, gradients of q, k and v), on inputs laid out
``[B, H, N, D]`` and built as a sweep builds them (``harness.sweep.config.SweepConfig``).

Each case follows ``harness.measure.worker.run_case`` up to the timing: the same skip reasons, the
same per-shape ``prepare`` outside the measurement, the same warm-up
(``harness.measure.timing.warm_up``: call
until two calls agree, so compilation and autotuning never land in a sample), the peak memory of
one call (``harness.measure.memory.peak_bytes``) and the output checked against the dense masked
reference. Only the timing itself is pytest-benchmark's (``benchmark(call)``), so that its
options (--benchmark-max-time, --benchmark-min-rounds, --benchmark-autosave,
--benchmark-compare, --benchmark-compare-fail, ...) work as usual. ``benchmark.extra_info``
holds the harness's row for the case (``harness.measure.case.Case.result``) without the times, plus
its useful FLOPs (the row's ``flops``, counted by ``harness.measure.flops``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.measure.case import Case
from harness.measure.inputs import dtype_name
from harness.measure.memory import available_bytes, malloc_for_timing, peak_bytes
from harness.measure.timing import synchronize, timed_call, warm_up
from harness.measure.worker import check_output, mode_call
from harness.store.records import Status, check_tolerance
from harness.sweep.config import SweepConfig

# Selectable with -m benchmark / -m "not benchmark"; no settings here, so that the command
# line's --benchmark-* options are never overridden.
pytestmark = pytest.mark.benchmark


def case_description(case: Case, fields: dict[str, Any]) -> dict[str, Any]:
    """The harness's results.csv row for ``case`` (backend, family, label, params JSON, seq_len,
    pass, shape, dtype, device, seed, threads, ...) with ``fields`` filled in, empty columns left
    out, plus ``useful_flops`` of one call (None for a family the FLOP model does not know)."""
    row = case.result(fields).row()
    row["useful_flops"] = row["flops"]  # the name this suite's extra_info has always used
    return {key: value for key, value in row.items() if value not in (None, "")}


def test_backend(
    benchmark, bench_config: SweepConfig, backend_name: str, pass_: str, seq_len: int
) -> None:
    backend = bench_config.make_backend(backend_name)
    inputs = bench_config.inputs(seq_len, pass_)
    device = inputs.device
    # The sweep refuses bad parameters up front; here they are a skipped row like the others.
    # dict.fromkeys: Reformer's reasons already include its parameter errors.
    reasons = backend.param_errors(seq_len) + backend.not_supported_reasons(inputs)
    reasons = list(dict.fromkeys(reasons))
    if reasons:
        pytest.skip("; ".join(reasons))
    free = available_bytes(device)
    need = backend.estimate_bytes(inputs) + inputs.qkv_bytes() * (2 if inputs.requires_grad else 1)
    if free is not None and need > free:
        pytest.skip(f"predicted {need / 2**30:.1f} GiB > {free / 2**30:.1f} GiB free")

    q, k, v = inputs.make_qkv()  # [B, H, N, D] each
    prepare_s, fn = timed_call(lambda: backend.prepare(inputs), device)  # per shape, paid once
    step = mode_call(pass_, fn, q, k, v, inputs.make_grad_out())  # the sweep's call per mode

    def call():
        # CUDA launches are asynchronous: without the synchronisation pytest-benchmark's wall
        # clock would time only the launch.
        result = step()
        synchronize(device)
        return result

    warm = warm_up(call, device, bench_config.timing)  # first call included: compilation
    peak, (out, _) = peak_bytes(call, device)
    case = Case(backend, inputs, pass_, bench_config.timing, bench_config.check_rows)
    check = check_output(case, out, q, k, v)
    del out
    assert check["check_ok"], (
        f"max error {check['max_err']:.3g} vs the dense masked reference exceeds "
        f"{check_tolerance(dtype_name(inputs.dtype)):g}: timing a wrong result would mislead"
    )

    fields = {
        "status": Status.OK,
        "prepare_ms": prepare_s * 1e3,
        "first_call_ms": warm.durations[0] * 1e3,
        "warmup_calls": warm.calls,
        "peak_mem_bytes": peak,
        "threads": torch.get_num_threads(),
        **{key: check[key] for key in ("max_err", "err_vs_full", "check_rows")},
    }
    benchmark.extra_info.update(case_description(case, fields))
    benchmark.group = f"{pass_} n={seq_len}"  # the table compares backends at one length
    malloc_for_timing()  # as a sweep times (harness.measure.memory), after the memory's setting
    warm_up(call, device, bench_config.timing)
    benchmark(call)
