"""A reproducible busy neighbour: ``python -m harness.sweep.loadgen`` keeps every core busy.

Shared CI runners and workstations run other work beside a benchmark. To test that the
harness's numbers (and its regression verdicts) survive that, this module starts worker
processes that each alternate, in fixed proportions, between the two ways a neighbour slows a
benchmark down:

- compute: a float64 matmul of two 384 x 384 matrices (1.2 MiB each, about the size of a core's
  L2 cache): a core taken, and its cache with it;
- memory: copying a 64 MiB array (larger than any last-level cache of this class of machine):
  memory bandwidth taken from everyone.

Each worker is single-threaded (BLAS threads pinned to 1 before numpy is imported; started from
a process that has already imported numpy, such as a test run, the workers inherit its BLAS
threads instead) and seeded, so a given ``--workers`` is the same load every time. The
default, two workers per core, keeps the load average near twice the core count, as on a CI
host shared with other jobs.

Workers stop by themselves after ``--seconds`` (and when the process that started them dies),
so a forgotten load generator cannot outlive a test run by much.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Iterator

DEFAULT_SECONDS = 3600.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_workers() -> int:
    return 2 * (os.cpu_count() or 1)


def _work(seconds: float, parent: int, seed: int) -> None:
    """One worker's loop; runs in its own process until ``seconds`` pass or ``parent`` dies."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    import numpy as np  # after the thread settings: one BLAS thread per worker

    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, 384, 384))
    src = rng.standard_normal(8 * 2**20)  # 64 MiB of float64
    dst = np.empty_like(src)
    end = time.monotonic() + seconds
    while time.monotonic() < end and os.getppid() == parent:
        for _ in range(20):  # about 2/3 of the time computing, 1/3 streaming memory
            a = np.tanh(a @ b)
        np.copyto(dst, src)
        np.copyto(src, dst)


def start(workers: int, seconds: float = DEFAULT_SECONDS) -> list[int]:
    """Fork ``workers`` load processes; returns their PIDs (stop them with ``stop``)."""
    if workers < 1:
        raise ValueError(f"workers must be positive, not {workers}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    parent = os.getpid()
    pids = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _work(seconds, parent, seed=i)
            except BaseException:
                code = 1
            finally:
                os._exit(code)  # never return into the parent's code (pytest, the CLI)
        pids.append(pid)
    return pids


def stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@contextlib.contextmanager
def busy(workers: int | None = None, seconds: float = DEFAULT_SECONDS) -> Iterator[list[int]]:
    """The machine kept busy for the ``with`` block: ``with busy(): run_the_check()``."""
    pids = start(workers or default_workers(), seconds)
    try:
        yield pids
    finally:
        stop(pids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.sweep.loadgen",
        description="Keep the machine busy (compute and memory bandwidth) until stopped.",
    )
    p.add_argument(
        "--workers", type=int, default=default_workers(),
        help=f"worker processes (default: 2 per core, {default_workers()} here)",
    )  # fmt: skip
    p.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS,
        help=f"stop after this long (default: {DEFAULT_SECONDS:g})",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.workers < 1 or not 0 < args.seconds < float("inf"):
        print(f"{p.prog}: error: --workers and --seconds must be positive", file=sys.stderr)
        return 2
    # the workers' work; without it they would all exit at once and load nothing. Not imported
    # here: the workers import it after pinning BLAS to one thread
    if importlib.util.find_spec("numpy") is None:
        print(f"{p.prog}: error: numpy is not installed in this Python", file=sys.stderr)
        return 2
    print(f"load: {args.workers} workers for up to {args.seconds:g} s (Ctrl-C stops)",
          file=sys.stderr)  # fmt: skip
    pids = start(args.workers, args.seconds)
    # SIGTERM (kill, a CI step's end) stops the workers too, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        for pid in pids:
            os.waitpid(pid, 0)
    except KeyboardInterrupt:
        pass
    finally:
        stop(pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
