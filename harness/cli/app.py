"""``run_bench.py``: validate the command line, describe the run, sweep, summarise.

Exit codes: 0 done (no regression, every case decided); 1 a regression (``compare``,
``--compare-to``); 2 bad input; 3 no regression, but a case could not be decided because it
was measured under unstable conditions (``--allow-inconclusive`` makes that 0); 4 an internal
error (a bug: one line, the traceback with ``--debug``), so that no crash reads as a
regression or as success; 5 the results could not be written (a full disk: the rows before
are intact, ``--resume`` completes the run); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM),
both with the finished cases kept.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from harness.analyse.rules import CompareSettings, Outcome, Verdict
from harness.cli.cli import build_config, parser_for
from harness.cli.cli_args import PROG, UsageError, compare_settings, resolve_device, resolve_dtype
from harness.cli.recorded import with_recorded_options
from harness.store import errors, lock
from harness.store.records import CASE_KEY, GRID_AXES, Status

if TYPE_CHECKING:
    from harness.measure.case import Case
    from harness.sweep.config import SweepConfig

# What imports torch (the sweep, the backends) or matplotlib (the commands' reports) is imported
# where it is used, so that '--help' answers at once; the modules tests reach through this one:
_LAZY = {"conditions": "harness.measure.conditions", "calibration": "harness.measure.calibration"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


QUIET_WAIT_S = (
    30  # before a round of measuring again, wait at most this long for other work to stop
)
INTERNAL_ERROR, STORAGE_ERROR = 4, 5


def describe_config(config: SweepConfig) -> dict:
    from harness.sweep import meta

    return meta.describe_config(config)


def _progress(cases):
    from tqdm import tqdm

    bar = tqdm(cases, unit="case", file=sys.stderr, dynamic_ncols=True)
    for case in bar:
        i = case.inputs
        bar.set_description(f"{case.backend.name} n={i.seq_len} {case.pass_}")
        yield case


# options renamed when "check" came to mean the output check only, and their names now
DEPRECATED = {"--check-against": "--compare-to", "--rechecks": "--remeasure"}


def _warn_deprecated(argv: list[str]) -> None:
    """After parsing (bad input keeps its one line), a line for each old option name used."""
    for old, new in DEPRECATED.items():
        if any(a == old or a.startswith(f"{old}=") for a in argv):
            print(f"{PROG}: warning: {old} is deprecated, use {new}", file=sys.stderr)


def run(argv: list[str]) -> int:
    if argv[:1] and not argv[0].startswith("-"):  # a command (or a mistake the parser names)
        from harness.cli.commands import COMMANDS

        if argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
    args = parser_for(argv).parse_args(argv)  # imports argv's --import modules
    _warn_deprecated(argv)
    if args.format != "table" and not args.list_backends:
        raise UsageError("--format applies to --list-backends")
    if args.list_backends:
        from harness.cli.listing import backend_table, format_json, format_table

        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        listed = backend_table(device, dtype)
        print(format_json(listed, device, dtype) if args.format == "json" else format_table(listed))
        return 0
    from harness.store import baselines, storage

    against = None
    if args.compare_to:
        try:
            against = baselines.find(args.compare_to)
        except baselines.BaselineError as exc:
            raise UsageError(str(exc)) from None
        command = storage.read_meta(against).get("command", PROG)
        args = with_recorded_options(argv, f"baseline {args.compare_to!r}", command)
    elif args.resume and args.out is not None and (args.out / storage.META).is_file():
        # the run's own options, so that '--resume --out RUN' alone completes it
        command = storage.read_meta(args.out).get("command")
        args = with_recorded_options(argv, f"run folder {args.out}", command)
    config = build_config(args)
    try:
        with lock.locked(config.out_dir):
            return _sweep(config, args, argv, against)
    except lock.RunFolderBusy as exc:
        raise UsageError(str(exc)) from None


def _sweep(config: SweepConfig, args, argv: list[str], against: Path | None) -> int:
    """The sweep, under the run folder's lock."""
    from harness.cli.commands import exit_code, report
    from harness.present.summary import summary_tables
    from harness.store import runs, storage
    from harness.sweep import machine
    from harness.sweep import meta as run_meta
    from harness.sweep.runner import run_sweep

    run_meta.validate_folder(config)
    meta = run_meta.start(config, [PROG, *argv])
    print(f"sweep: {len(config.cases())} cases on {machine.device_name(config.device)} -> "
          f"{config.out_dir}", file=sys.stderr)  # fmt: skip
    try:
        run_sweep(config, progress=_progress)
    except KeyboardInterrupt:
        print(f"\n{_interruption()}: finished cases are in {config.out_dir}; add --resume to "
              "complete", file=sys.stderr)  # fmt: skip
        return _interrupted_code()
    except errors.StorageError as exc:
        print(f"{PROG}: error: {exc.strerror}; '--resume --out {config.out_dir}' completes the "
              "run once it can be written", file=sys.stderr)  # fmt: skip
        return STORAGE_ERROR
    _budget_spent(config, meta)
    run_meta.finish(config, meta)
    results = with_derived(config.out_dir, meta)
    print(summary_tables(results, run_calibration_ms=runs.calibration_ms(meta)))
    print(f"\nresults: {config.out_dir / storage.RESULTS}  meta: {config.out_dir / storage.META}")
    if args.report:
        report([str(config.out_dir)])
    if against is None:
        return 0
    outcome = _compare_with_remeasures(against, config, compare_settings(args), args.remeasure)
    return exit_code(outcome, args.allow_inconclusive)


def with_derived(out_dir: Path, meta: dict):
    """The run's rows, every one of them (earlier rounds too), with the derived columns
    (``harness.analyse.derived``) recomputed and stored in results.csv; returned as stored."""
    from harness.analyse.derived import derived_columns
    from harness.store import storage

    results = derived_columns(storage.read_results(out_dir), str(meta.get("device_name", "")))
    storage.rewrite_results(out_dir, results)
    return results


def _budget_spent(config: SweepConfig, meta: dict) -> None:
    """With ``--time-budget``: the cases left unrun, said on stderr and kept in meta.json."""
    if config.time_budget_s is None:
        return
    from harness.sweep.runner import not_run

    left = len(not_run(config))
    meta["time_budget"] = {"seconds": config.time_budget_s, "cases_not_run": left}
    if left:
        print(f"time budget of {config.time_budget_s:g} s spent: {left} of "
              f"{len(config.cases())} cases not run; '{PROG} --resume --out {config.out_dir}' "
              "runs them", file=sys.stderr)  # fmt: skip


def _cases_to_remeasure(config: SweepConfig, table) -> list[Case]:
    """The cases of ``config`` at the rows of the compare table judged inconclusive or
    regressed: matched on label, mode, length and every axis of the grid the table has."""
    from harness.store.records import case_key

    wanted = table[table["verdict"].isin([Verdict.INCONCLUSIVE, Verdict.REGRESSED])]
    axes = [c for c in ("pass", "seq_len", *GRID_AXES) if c in table.columns and c != "seed"]
    keys = {(r["backend"], *(_plain(r[c]) for c in axes)) for r in wanted.to_dict("records")}
    found = []
    for case in config.cases():
        row = dict(zip(CASE_KEY, case_key(case.result({"status": Status.SKIPPED}).row()),
                       strict=True))  # fmt: skip
        if (case.backend.label(), *(_plain(row[c]) for c in axes)) in keys:
            found.append(case)
    return found


def _plain(value) -> str:
    """One spelling for a key's value read from a table or built by a case (1 and 1.0, True
    and "True")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).lower()


def _quiet(device: str) -> bool:
    """Give other work on the machine up to ``QUIET_WAIT_S`` to finish; False if it did not."""
    from harness.analyse import stability
    from harness.measure import conditions

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


def _compare_with_remeasures(
    against: Path, config: SweepConfig, settings: CompareSettings, remeasure: int
) -> Outcome:
    """Compare with the baseline; measure inconclusive and regressed cases again (twice the
    processes, up to ``remeasure`` rounds), as asv does before it reports, so that a busy
    moment is not a verdict; but not while other work keeps the machine busy, which would only
    be measured again. Each round's rows are appended (their ``round`` says which) and the last
    row of a case stands."""
    from harness.cli.commands import show_comparison, verdict_counts
    from harness.present import verdicts
    from harness.store import storage
    from harness.sweep.runner import run_sweep

    result = verdicts.compare(against, config.out_dir, settings)
    for round_ in range(2, remeasure + 2):
        todo = _cases_to_remeasure(config, result.table)
        if not todo:
            break
        processes = 2 * config.processes
        print(f"{verdict_counts(result.table)}: measuring again, round {round_ - 1} of "
              f"{remeasure}, {len(todo)} cases with {processes} processes each",
              file=sys.stderr)  # fmt: skip
        if not _quiet(config.device):
            break
        again = dataclasses.replace(config, processes=processes, resume=False)
        run_sweep(again, progress=_progress, cases=todo, round_=round_)
        with_derived(config.out_dir, storage.read_meta(config.out_dir))  # the new rows' too
        result = verdicts.compare(against, config.out_dir, settings)
    show_comparison(result, settings)
    return result.outcome


def _on_sigterm(signum: int, frame) -> None:
    # handled like Ctrl-C: the running case is stopped, finished rows stay, a message says so
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


_signal_received = signal.SIGINT


def _interruption() -> str:
    return "interrupted" if _signal_received == signal.SIGINT else "terminated (SIGTERM)"


def _interrupted_code() -> int:
    return 128 + _signal_received  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, like errors (a torn row skipped, a library's complaint)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def _backend_import_error(exc: BaseException) -> bool:
    """A module or entry point meant to bring backends failed (``registry``): bad input. The
    registry is looked up only if imported: before that no such error can have happened."""
    registry = sys.modules.get("harness.measure.registry")
    return registry is not None and isinstance(exc, registry.BackendImportError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    global _signal_received
    _signal_received = signal.SIGINT
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run(argv)
    except (UsageError, errors.RunFolderError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except errors.StorageError as exc:  # a full disk is no bug: its own code, in one line
        print(f"{PROG}: error: {exc.strerror}", file=sys.stderr)
        return STORAGE_ERROR
    except KeyboardInterrupt:
        print(f"\n{PROG}: {_interruption()}", file=sys.stderr)
        return _interrupted_code()
    except Exception as exc:  # a bug: never exit 1 ("regression") or 0 for it
        if _backend_import_error(exc):
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{PROG}: internal error: {type(exc).__name__}: {first} (--debug shows where)",
              file=sys.stderr)  # fmt: skip
        return INTERNAL_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
