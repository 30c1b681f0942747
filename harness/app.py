"""``run_bench.py``: validate the command line, describe the run, sweep, summarise.

Exit codes: 0 done (no regression, every case decided); 1 a regression (``compare``,
``--check-against``); 2 bad input; 3 no regression, but a case could not be decided because it
was measured under unstable conditions (``--allow-inconclusive`` makes that 0); 4 an internal
error (a bug: one line, the traceback with ``--debug``), so that no crash reads as a
regression or as success; 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from pathlib import Path

import torch

from harness import baselines, checks, conditions, machine, reference_op, stability, storage
from harness.cli import (
    PROG,
    UsageError,
    build_config,
    build_parser,
    check_settings,
    parse_baseline_args,
    parse_compare_args,
    parse_report_args,
    resolve_device,
    resolve_dtype,
    with_baseline_options,
)
from harness.config import Case, SweepConfig
from harness.inputs import dtype_name
from harness.listing import backend_table, format_table
from harness.regression import CheckSettings
from harness.runner import run_sweep
from harness.summary import summary_tables

QUIET_WAIT_S = 30  # before a recheck round, wait at most this long for other work to stop
INTERNAL_ERROR, INTERRUPTED = 4, 130


def describe_config(config: SweepConfig) -> dict:
    return {
        "lengths": list(config.lengths),
        "backends": {n: config.make_backend(n).params_dict() for n in config.backends},
        "passes": list(config.passes),
        "dtype": dtype_name(config.dtype),
        "batch": config.batch,
        "heads": config.heads,
        "head_dim": config.head_dim,
        "seed": config.seed,
        "timing": config.timing.__dict__,
        "case_timeout_s": config.case_timeout_s,
        "processes": config.processes,
        "check_rows": config.check_rows,
    }


def _progress(cases):
    from tqdm import tqdm

    bar = tqdm(cases, unit="case", file=sys.stderr, dynamic_ncols=True)
    for case in bar:
        i = case.inputs
        bar.set_description(f"{case.backend.name} n={i.seq_len} {case.pass_}")
        yield case


def report(argv: list[str]) -> int:
    """``report RUN_DIR`` or ``report RUN_A RUN_B``."""
    from harness import comparison
    from harness import report as single

    runs, out = parse_report_args(argv)
    path = single.write(runs[0]) if len(runs) == 1 else comparison.write(*runs, out_dir=out)
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def compare(argv: list[str]) -> int:
    """``compare BASELINE_RUN NEW_RUN``: 1 when a case regressed, 3 when one could not be
    decided, else 0."""
    base, new, settings, out, allow_inconclusive = parse_compare_args(argv)
    result = checks.compare(base, new, settings, out)
    _show(result, settings)
    return _exit_code(result.outcome, allow_inconclusive)


def _show(result: checks.Comparison, settings: CheckSettings) -> None:
    """Print the verdicts, and warn where the evidence is thin."""
    print(checks.display_table(result.table, settings).to_markdown(index=False))
    path = result.path
    print(f"\n{_counts(result.table)}; written to {path} and {path.with_suffix('.csv')}")
    for run in result.thin:
        print(f"{PROG}: warning: {run} timed cases in fewer than 3 processes: a difference "
              "cannot be shown significant that way (record with --processes 5); such "
              "differences are "
              + ("judged anyway (--strict)" if settings.strict else "inconclusive"),
              file=sys.stderr)  # fmt: skip


def _counts(table) -> str:
    return ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts().items())


def _exit_code(outcome: str, allow_inconclusive: bool) -> int:
    if outcome == "regressed":
        print(f"{PROG}: regression", file=sys.stderr)
    elif outcome == "inconclusive":
        print(f"{PROG}: inconclusive: no case regressed, but some could not be decided (see "
              "'why'); " + ("allowed (--allow-inconclusive)" if allow_inconclusive
                            else "exit code 3"), file=sys.stderr)  # fmt: skip
        if allow_inconclusive:
            return 0
    return checks.EXIT_CODES[outcome]


def baseline(argv: list[str]) -> int:
    """``baseline save RUN_DIR NAME``."""
    run_dir, name, replace = parse_baseline_args(argv)
    try:
        target = baselines.save(run_dir, name, replace=replace)
    except baselines.BaselineError as exc:
        raise UsageError(str(exc)) from None
    print(f"baseline {name!r}: {target}")
    return 0


COMMANDS = {"report": report, "compare": compare, "baseline": baseline}


def run(argv: list[str]) -> int:
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    if args.list_backends:
        device = resolve_device(args.device)
        print(format_table(backend_table(device, resolve_dtype(args.dtype, device))))
        return 0
    against = None
    if args.check_against:
        try:
            against = baselines.find(args.check_against)
        except baselines.BaselineError as exc:
            raise UsageError(str(exc)) from None
        command = storage.read_meta(against).get("command", PROG)
        args = with_baseline_options(argv, args.check_against, command)
    config = build_config(args)
    report_after = args.report
    threads = config.threads or torch.get_num_threads()
    meta = machine.describe(config.device, threads, [PROG, *argv])
    meta["config"] = describe_config(config)
    if config.resume and (config.out_dir / storage.META).exists():
        first = storage.read_meta(config.out_dir)
        first.setdefault("resumed", []).append(meta)
        meta = first
    meta.setdefault("conditions", {}).setdefault("before", conditions.snapshot(config.device))
    reference = reference_op.measure_reference(config.device, config.timing, config.threads)
    meta.setdefault("reference_op", {}).setdefault("before", reference)
    storage.write_meta(config.out_dir, meta)
    print(f"sweep: {len(config.cases())} cases on {meta['device_name']} -> {config.out_dir}",
          file=sys.stderr)  # fmt: skip
    try:
        run_sweep(config, progress=_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cases are in {config.out_dir}; add --resume to complete",
              file=sys.stderr)  # fmt: skip
        return INTERRUPTED
    meta["reference_op"]["after"] = reference_op.measure_reference(
        config.device, config.timing, config.threads
    )
    meta["conditions"]["after"] = conditions.snapshot(config.device)
    storage.write_meta(config.out_dir, meta)
    results = storage.read_results(config.out_dir)
    print(summary_tables(results, run_ref_ms=reference_op.reference_ms(meta)))
    print(f"\nresults: {config.out_dir / storage.RESULTS}  meta: {config.out_dir / storage.META}")
    if report_after:
        report([str(config.out_dir)])
    if against is None:
        return 0
    outcome = _check_with_rechecks(against, config, check_settings(args), args.rechecks)
    return _exit_code(outcome, args.allow_inconclusive)


def _cases_to_recheck(config: SweepConfig, table) -> list[Case]:
    wanted = table[table["verdict"].isin(["inconclusive", "regressed"])]
    keys = set(zip(wanted["backend"], wanted["pass"], wanted["seq_len"], strict=True))
    return [c for c in config.cases() if (c.backend.label(), c.pass_, c.inputs.seq_len) in keys]


def _quiet(device: str) -> bool:
    """Give other work on the machine up to ``QUIET_WAIT_S`` to finish; False if it did not."""
    start = time.monotonic()
    while True:
        other = conditions.snapshot(device, seconds=2.0)["other_cpu"]
        if other is None or other <= stability.BUSY_LIMIT:
            return True
        if time.monotonic() - start >= QUIET_WAIT_S:
            print(f"the machine stayed busy for {QUIET_WAIT_S} s ({other:.0%} of the CPUs used "
                  "by other processes): measuring again would measure the same",
                  file=sys.stderr)  # fmt: skip
            return False


def _check_with_rechecks(
    against: Path, config: SweepConfig, settings: CheckSettings, rechecks: int
) -> str:
    """Compare with the baseline; measure inconclusive and regressed cases again (twice the
    processes, up to ``rechecks`` rounds), as asv does before it reports, so that a busy
    moment is not a verdict; but not while other work keeps the machine busy, which would only
    be measured again. Each round's rows are appended (their ``round`` says which) and the last
    row of a case stands."""
    result = checks.compare(against, config.out_dir, settings)
    for round_ in range(2, rechecks + 2):
        todo = _cases_to_recheck(config, result.table)
        if not todo:
            break
        processes = 2 * config.processes
        print(f"{_counts(result.table)}: recheck {round_ - 1} of {rechecks}, {len(todo)} "
              f"cases with {processes} processes each", file=sys.stderr)  # fmt: skip
        if not _quiet(config.device):
            break
        again = dataclasses.replace(config, processes=processes, resume=False)
        run_sweep(again, progress=_progress, cases=todo, round_=round_)
        result = checks.compare(against, config.out_dir, settings)
    _show(result, settings)
    return result.outcome


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return run(argv)
    except (UsageError, storage.RunFolderError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a bug: never exit 1 ("regression") or 0 for it
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{PROG}: internal error: {type(exc).__name__}: {first} (--debug shows where)",
              file=sys.stderr)  # fmt: skip
        return INTERNAL_ERROR
