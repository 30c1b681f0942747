"""Each backend's ``estimate_bytes`` against the peak a real sweep measures (CPU, 2K tokens).

The worker skips a case whose estimate exceeds the free memory, so an estimate far above the
peak skips cases that would fit and one far below lets an oversized case start. The bound is
the issue's: within 25% of the measured peak. The stored 4K evidence and its table are in
``results/memory-estimates-cpu-4k/``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from harness.measure.timing import TimingSettings
from harness.store.records import Status
from harness.store.storage import read_results
from harness.sweep.config import SweepConfig
from harness.sweep.runner import run_sweep

QUICK = TimingSettings(warmup_s=0.01, min_time_s=0.02, min_repeats=3, max_time_s=2.0)
N = 2048


def ratios(config: SweepConfig) -> pd.DataFrame:
    """Run ``config``; its rows with ``ratio`` = estimate / measured peak."""
    run_sweep(config)
    df = read_results(config.out_dir)
    assert (df.status == Status.OK).all(), df[["backend", "pass", "status", "reason"]]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as the cases ran: the CPU flash kernel's tiles are per thread
        estimates = [
            config.make_backend(row.backend).estimate_bytes(config.inputs(row.seq_len, row["pass"]))
            for _, row in df.iterrows()
        ]
    finally:
        torch.set_num_threads(threads)
    return df.assign(ratio=[e / p for e, p in zip(estimates, df.peak_mem_bytes, strict=True)])


def assert_within(df: pd.DataFrame) -> None:
    table = df[["backend", "pass", "peak_mem_bytes", "ratio"]].to_string()
    assert df.ratio.between(0.75, 1.25).all(), table


def sweep(tmp_path: Path, backends: tuple[str, ...], **kw) -> SweepConfig:
    return SweepConfig(
        lengths=(N,), backends=backends, out_dir=tmp_path, passes=("fwd", "fwdbwd"),
        timing=QUICK, threads=1, check_rows=16, **kw,
    )  # fmt: skip


def test_estimates_are_within_a_quarter_of_the_measured_peak(tmp_path):
    backends = ("full-naive", "longformer", "bigbird", "reformer")
    df = ratios(sweep(tmp_path, backends))
    assert sorted(set(df.backend)) == sorted(backends) and len(df) == 2 * len(backends)
    assert_within(df)
    # the old count (four N x N matrices with a backward pass) was a third too high
    naive = df[(df.backend == "full-naive") & (df["pass"] == "fwdbwd")].iloc[0]
    assert naive.peak_mem_bytes < 3.5 * 4 * N * N * 4


def test_all_global_bigbird_is_dense_fused_attention(tmp_path):
    """Every block global: one fused SDPA call, a few MiB, where the old estimate counted
    [B, H, N, N] scores."""
    config = sweep(tmp_path, ("bigbird",), heads=8, param_grid=(("global_blocks", (16,)),))
    df = ratios(config)
    assert_within(df)
    assert df.peak_mem_bytes.max() < 8 * N * N * 4 / 4  # a quarter of one score matrix
