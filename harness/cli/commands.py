"""The commands that read stored runs: ``report``, ``compare`` and ``baseline save``, and how a
comparison's verdicts are shown and turned into an exit code (shared with ``--compare-to``)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.analyse.rules import CompareSettings, Outcome
from harness.cli.cli_args import PROG, UsageError
from harness.cli.cli_commands import (
    parse_baseline_args,
    parse_compare_args,
    parse_export_args,
    parse_report_args,
    parse_upgrade_args,
)
from harness.present import verdicts
from harness.store import baselines


def report(argv: list[str]) -> int:
    """``report RUN_DIR`` or ``report RUN_A RUN_B``."""
    from harness.present import comparison
    from harness.present import report as single

    runs, out = parse_report_args(argv)
    path = single.write(runs[0]) if len(runs) == 1 else comparison.write(*runs, out_dir=out)
    print(f"report: {path} and {path.with_suffix('.html')}")
    if len(runs) == 2:  # after the work: bad input still gets its one line
        print(f"{PROG}: warning: 'report RUN_A RUN_B' is deprecated: 'compare RUN_A RUN_B' writes "
              "the same comparison report, with the verdicts", file=sys.stderr)  # fmt: skip
    return 0


def compare(argv: list[str]) -> int:
    """``compare BASELINE_RUN NEW_RUN``: the verdicts (``compare.md``, ``compare.csv``) and the
    side-by-side comparison report (``vs-<BASELINE>/report.md``, ``.html``, ``ratios.png``); exit
    1 when a case regressed, 3 when one could not be decided, else 0."""
    base, new, settings, out, allow_inconclusive = parse_compare_args(argv)
    result, path = compare_runs(base, new, settings, out)
    show_comparison(result, settings)
    print(f"comparison report: {path} and {path.with_suffix('.html')}")
    return exit_code(result.outcome, allow_inconclusive)


def compare_runs(
    base: Path, new: Path, settings: CompareSettings, out: Path | None = None
) -> tuple[verdicts.Comparison, Path]:
    """The verdicts (compare.md, compare.csv, into ``out`` or the new run) and, beside them, the
    side-by-side report (``vs-<BASELINE>/report.md``): the comparison and that report's path."""
    from harness.present import comparison

    result = verdicts.compare(base, new, settings, out)
    where = (out / f"vs-{base.resolve().name}") if out else None
    return result, comparison.write(base, new, out_dir=where)


def show_comparison(result: verdicts.Comparison, settings: CompareSettings) -> None:
    """Print the verdicts (the cases that need attention first, 120 columns wide), and warn
    where the evidence is thin."""
    print(verdicts.terminal_table(result.table, settings))
    path = result.path
    print(f"\n{verdict_counts(result.table)}; written to {path} and {path.with_suffix('.csv')}")
    for run in result.thin:
        print(f"{PROG}: warning: {run} timed cases in fewer than 3 processes: a difference "
              "cannot be shown significant that way (record with --processes 5); such "
              "differences are "
              + ("judged anyway (--strict)" if settings.strict else "inconclusive"),
              file=sys.stderr)  # fmt: skip


def verdict_counts(table) -> str:
    return ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts().items())


def exit_code(outcome: Outcome, allow_inconclusive: bool) -> int:
    if outcome == Outcome.REGRESSED:
        print(f"{PROG}: regression", file=sys.stderr)
    elif outcome == Outcome.INCONCLUSIVE:
        print(f"{PROG}: inconclusive: no case regressed, but some could not be decided (see "
              "'why'); " + ("allowed (--allow-inconclusive)" if allow_inconclusive
                            else "exit code 3"), file=sys.stderr)  # fmt: skip
        if allow_inconclusive:
            return 0
    return verdicts.EXIT_CODES[outcome]


def baseline(argv: list[str]) -> int:
    """``baseline save RUN_DIR NAME``."""
    run_dir, name, replace = parse_baseline_args(argv)
    try:
        target = baselines.save(run_dir, name, replace=replace)
    except baselines.BaselineError as exc:
        raise UsageError(str(exc)) from None
    print(f"baseline {name!r}: {target}")
    return 0


def upgrade(argv: list[str]) -> int:
    """``upgrade RUN_DIR [RUN_DIR ...]``: store a format-1 run's family facts in it."""
    from harness.cli import upgrade as formats

    folders = parse_upgrade_args(argv)
    for run in folders:
        changed = formats.upgrade(run)
        print(f"{run}: " + ("upgraded to format " if changed else "already format ")
              + str(formats.FORMAT_VERSION))  # fmt: skip
    return 0


def export(argv: list[str]) -> int:
    """``export RUN_DIR [--out FILE]``: the run as JSON (``harness.present.export``)."""
    from harness.present import export as exporting

    run, out = parse_export_args(argv)
    print(f"export: {exporting.write(run, out)}")
    return 0


def gpu_check(argv: list[str]) -> int:
    """``gpu-check``: the GPU check (``harness.cli.gpu_check``)."""
    from harness.cli.gpu_check import gpu_check as check

    return check(argv)


COMMANDS = {"report": report, "compare": compare, "baseline": baseline, "upgrade": upgrade,
            "export": export, "gpu-check": gpu_check}  # fmt: skip
