"""Options and shared setup of the pytest-benchmark suite over the backend registry.

The suite is not part of the default test run (``norecursedirs`` in pyproject.toml keeps pytest
out of this folder unless it is named on the command line); see README.md here.

Options (each also read from an environment variable, so that tox can pass it through):

- ``--bench-lengths 512,1024`` (``BENCH_LENGTHS``): sequence lengths, default 512 1024 2048
  (Longformer's default window is 256 and must be shorter than the sequence);
- ``--bench-device`` (``BENCH_DEVICE``): ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``;
- ``--bench-dtype`` (``BENCH_DTYPE``): ``auto`` (float32 on CPU, bfloat16 on CUDA, as the
  harness) or a dtype name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.cli.cli_args import UsageError, resolve_device, resolve_dtype
from harness.measure.inputs import DTYPES, dtype_name
from harness.measure.registry import backend_names
from harness.sweep.config import SweepConfig

DEFAULT_LENGTHS = (512, 1024, 2048)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention-bench benchmarks")
    group.addoption(
        "--bench-lengths",
        default=os.environ.get("BENCH_LENGTHS", ""),
        help="sequence lengths, comma or space separated (env BENCH_LENGTHS; "
        f"default {' '.join(map(str, DEFAULT_LENGTHS))})",
    )
    group.addoption(
        "--bench-device",
        default=os.environ.get("BENCH_DEVICE", "cpu"),
        help="cpu (default), cuda, cuda:N or auto (env BENCH_DEVICE)",
    )
    group.addoption(
        "--bench-dtype",
        default=os.environ.get("BENCH_DTYPE", "auto"),
        choices=["auto", *DTYPES],
        help="auto: float32 on CPU, bfloat16 on CUDA (env BENCH_DTYPE)",
    )


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"512, 1024 2048"`` -> ``(512, 1024, 2048)``; empty text gives the defaults."""
    words = text.replace(",", " ").split()
    if not words:
        return DEFAULT_LENGTHS
    try:
        lengths = tuple(int(w) for w in words)
    except ValueError:
        raise pytest.UsageError(f"--bench-lengths: not integers: {text!r}") from None
    if any(n < 1 for n in lengths):
        raise pytest.UsageError(f"--bench-lengths: lengths must be positive: {text!r}")
    return tuple(sorted(set(lengths)))


CONFIG_KEY = pytest.StashKey[SweepConfig]()


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the options once, as the harness's command line does: a bad device or dtype is a
    usage error before anything is collected."""
    try:
        device = resolve_device(config.getoption("bench_device"))
        dtype = resolve_dtype(config.getoption("bench_dtype"), device)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    # The harness's defaults elsewhere: batch 1, 4 heads, head_dim 64, seed 0, default params,
    # torch's default thread count.
    config.stash[CONFIG_KEY] = SweepConfig(
        lengths=parse_lengths(config.getoption("bench_lengths")),
        backends=tuple(backend_names()),
        out_dir=Path("."),  # nothing is written here: pytest-benchmark stores the results
        device=device,
        dtype=dtype,
    )


def sweep_config(config: pytest.Config) -> SweepConfig:
    return config.stash[CONFIG_KEY]


@pytest.fixture(scope="session")
def bench_config(pytestconfig: pytest.Config) -> SweepConfig:
    return sweep_config(pytestconfig)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per (length, backend, pass), in the harness's sweep order (shortest lengths
    first); ids such as ``full-sdpa-fwd-1024`` are what --benchmark-compare matches on."""
    wanted = ("backend_name", "pass_", "seq_len")
    if not set(wanted) <= set(metafunc.fixturenames):
        return
    c = sweep_config(metafunc.config)
    cases = [(b, p, n) for n in c.lengths for b in c.backends for p in c.passes]
    metafunc.parametrize(wanted, cases, ids=[f"{b}-{p}-{n}" for b, p, n in cases])


def pytest_report_header(config: pytest.Config) -> str:
    c = sweep_config(config)
    return (
        f"attention-bench: lengths {' '.join(map(str, c.lengths))}, device {c.device}, "
        f"dtype {dtype_name(c.dtype)}, shape [{c.batch}, {c.heads}, N, {c.head_dim}], "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
