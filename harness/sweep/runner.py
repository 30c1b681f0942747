"""The sweep: every case in its own process, rows written as they finish, failures contained.

After a backend runs out of memory or time at some length, its longer lengths are recorded as
skipped with that cause (a failed forward pass also skips the forward+backward pass at that
length and beyond), so a sweep never grinds through cases that cannot succeed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterable

from harness.measure.case import Case
from harness.measure.worker import child_main
from harness.store.records import CaseResult, Status
from harness.store.storage import (
    RESULTS,
    append_result,
    finished_keys,
    read_results,
    resumable_rows,
)
from harness.sweep.config import SweepConfig
from harness.sweep.repeats import combine

FATAL = (Status.OOM, Status.TIMEOUT)  # longer lengths of the same backend would fail too
# multiprocessing's exit code for a forkserver process whose server died before reporting it
SERVER_GONE = 255


def _context(preload: tuple[str, ...] = ()) -> mp.context.BaseContext:
    # A forkserver that has imported torch once hands out fresh processes in milliseconds; each
    # case still gets its own address space (and never inherits a CUDA context).
    ctx = mp.get_context("forkserver")
    # harness.cli.app (and pandas, which it imports): each new process re-imports the parent's main
    # module, run_bench.py (0.35 s to 1 s each, unless the server has); symbolic_shapes:
    # autograd imports it on a process's first backward (0.5 s)
    modules = ["torch", "pandas", "harness.cli.app", "torch.fx.experimental.symbolic_shapes",
               "harness.measure.worker", "attention_impls"]  # fmt: skip
    ctx.set_forkserver_preload([*modules, *preload])
    return ctx


def preload_modules(config: SweepConfig, cases: list[Case]) -> tuple[str, ...]:
    """What the cases' forkserver imports besides the harness: the backends' ``preload`` and
    the sweep's ``--import`` modules (so that the cases have the backends they bring)."""
    return tuple(sorted({m for c in cases for m in c.backend.preload} | set(config.imports)))


def case_context(config: SweepConfig) -> mp.context.BaseContext:
    """The multiprocessing context the cases of ``config`` run in."""
    return _context(preload_modules(config, config.cases()))


def run_in_process(
    ctx: mp.context.BaseContext, case: Case, timeout_s: float, threads: int | None
) -> dict:
    """Run ``child_main`` for ``case`` in a new process; a crash or timeout becomes a status."""
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(case, sender, threads, os.getpid()), daemon=True)
    start = time.perf_counter()
    result = None
    try:  # from before the start: an interruption at any point still stops the process
        try:
            _start(proc)
        except (OSError, EOFError) as exc:
            reason = f"could not start the case's process ({type(exc).__name__}: {exc})"
            return {"status": Status.ERROR, "reason": reason, "wall_s": time.perf_counter() - start}
        sender.close()
        if receiver.poll(timeout_s):
            with contextlib.suppress(EOFError):  # EOF: it died before it could answer
                result = receiver.recv()
            proc.join(timeout=10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        elif result is None and proc.exitcode == SERVER_GONE:
            # Its forkserver died, so the process's state is unknown (is_alive says False) and
            # the case may still be running: stopped here, so that a timeout still holds
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        sender.close()
        receiver.close()
    wall = time.perf_counter() - start
    if result is not None:
        return result
    if wall >= timeout_s:
        return {
            "status": Status.TIMEOUT,
            "reason": f"over the {timeout_s:g} s case limit",
            "wall_s": wall,
        }
    code = proc.exitcode
    if code is not None and code < 0 and -code == signal.SIGKILL:
        return {
            "status": Status.OOM,
            "reason": "process killed (SIGKILL), likely out of memory",
            "wall_s": wall,
        }
    if code == SERVER_GONE:
        why = "case process died (exit code 255, or its forkserver was killed)"
    elif code and code < 0:
        why = f"case process died (signal {signal.Signals(-code).name})"
    else:
        why = f"case process died (exit code {code})"
    return {"status": Status.ERROR, "reason": why, "wall_s": wall}


def _start(proc: mp.process.BaseProcess, attempts: int = 3) -> None:
    """Start the case's process; a forkserver that died (was killed) during the handshake is
    started again by the next attempt (a new one imports torch: seconds)."""
    for attempt in range(attempts):
        try:
            proc.start()
            return
        except (OSError, EOFError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


class _Failures:
    """The first fatal failure per (backend, params, pass): longer lengths are skipped."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], tuple[int, str]] = {}

    def cause(self, case: Case) -> str | None:
        name, params, n = case.backend.name, case.backend.params_json(), case.inputs.seq_len
        same = self.seen.get((name, params, case.pass_))
        if same and n > same[0]:
            return f"{same[1]} at length {same[0]}"
        fwd = self.seen.get((name, params, "fwd"))
        if case.pass_ != "fwd" and fwd and n >= fwd[0]:
            return f"{fwd[1]} at length {fwd[0]} (fwd)"
        return None

    def record(self, backend: str, params: str, pass_: str, seq_len: int, status: str) -> None:
        key = (backend, params, pass_)
        if status in FATAL and (key not in self.seen or seq_len < self.seen[key][0]):
            self.seen[key] = (seq_len, status)


def run_sweep(
    config: SweepConfig,
    progress: Callable[[Iterable[Case]], Iterable[Case]] = lambda cases: cases,
    on_result: Callable[[CaseResult], None] = lambda result: None,
    cases: list[Case] | None = None,
    round_: int = 1,
) -> list[CaseResult]:
    """Run every case of ``config`` (or only ``cases``) not already in its results file;
    returns the new rows. ``round_`` > 1 marks rows that measure again cases the results file
    already holds (``--compare-to``'s rounds of measuring again): the last row of a case stands.
    Once ``config.time_budget_s`` has passed, no case is started: those left have no row, as
    after an interruption (``not_run`` lists them; ``--resume`` runs them)."""
    cases = config.cases() if cases is None else cases
    failures = _Failures()
    done: set[tuple] = set()
    earlier = resumable_rows(config.out_dir) if config.resume else None
    if earlier is not None:
        done = finished_keys(earlier)
        for _, row in earlier.iterrows():  # what the earlier part learned about failures holds
            failures.record(
                row["backend"], row["params"], row["pass"], int(row["seq_len"]), row["status"]
            )
    todo = [c for c in cases if c.key() not in done]
    ctx = _context(preload_modules(config, todo)) if todo else None
    results = []
    budget = config.time_budget_s
    deadline = None if budget is None else time.monotonic() + budget
    for case in progress(todo):
        if deadline is not None and time.monotonic() >= deadline:
            break
        cause = failures.cause(case)
        if cause:
            fields = {"status": Status.SKIPPED, "reason": cause}
        else:
            parts = []
            while len(parts) < config.processes and (not parts or parts[-1]["status"] == Status.OK):
                parts.append(run_in_process(ctx, case, config.case_timeout_s, config.threads))
            fields = combine(parts, config.processes)
        result = case.result({**fields, "round": round_})
        failures.record(result.backend, result.params, result.pass_, result.seq_len, result.status)
        append_result(config.out_dir, result)
        results.append(result)
        on_result(result)
    return results


def not_run(config: SweepConfig) -> list[Case]:
    """The cases of ``config`` its run folder has no row for (a time budget spent, an
    interruption), in the order they would run."""
    stored = (config.out_dir / RESULTS).is_file()
    done = finished_keys(read_results(config.out_dir)) if stored else set()
    return [c for c in config.cases() if c.key() not in done]
