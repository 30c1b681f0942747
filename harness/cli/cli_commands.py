"""The parsers of the commands that read stored runs: ``report``, ``compare``, ``baseline``."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.analyse.rules import CompareSettings
from harness.cli.cli_args import (
    PROG,
    Parser,
    UsageError,
    add_compare_options,
    compare_settings,
    out_path,
)


def build_report_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=f"{PROG} report",
        description="Report one run (RUN_DIR). RUN_A RUN_B, the side-by-side report of two runs, "
        "is deprecated: 'compare RUN_A RUN_B' writes it with the verdicts. Reads "
        "only the runs' results.csv and meta.json.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="one or two run folders")
    p.add_argument(
        "--out", type=out_path, help="comparison folder (default: RUN_B/vs-<name of RUN_A>)"
    )
    return p


def parse_report_args(argv: list[str]) -> tuple[list[Path], Path | None]:
    args = build_report_parser().parse_args(argv)
    if len(args.runs) > 2:
        raise UsageError("report takes one run folder, or two to compare")
    if args.out is not None and len(args.runs) == 1:
        raise UsageError("--out applies to a comparison of two runs; a report goes into its run")
    for run in args.runs:
        if not run.is_dir():
            raise UsageError(f"{run}: no such run folder")
    return list(args.runs), args.out


def parse_upgrade_args(argv: list[str]) -> list[Path]:
    p = Parser(
        prog=f"{PROG} upgrade",
        description="Store the facts of each row's backend (useful FLOPs, promise, sparse, "
        "yardstick) in a run recorded before rows carried them (format 1), so that it reads "
        "without the backends; see harness/store/records.py for the format history.",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR")
    args = p.parse_args(argv)
    for run in args.runs:
        if not run.is_dir():
            raise UsageError(f"{run}: no such run folder")
    return list(args.runs)


def parse_compare_args(argv: list[str]) -> tuple[Path, Path, CompareSettings, Path | None, bool]:
    """(baseline, new run, settings, --out, --allow-inconclusive)."""
    p = Parser(
        prog=f"{PROG} compare",
        description="Judge NEW_RUN against BASELINE_RUN case by case; exit 1 when a case "
        "regressed (slower beyond tolerance and significant, hungrier, or newly failing), 3 "
        "when none did but a case could not be decided (measured under unstable conditions), "
        "0 otherwise.",
    )
    p.add_argument("baseline", type=Path, metavar="BASELINE_RUN")
    p.add_argument("new", type=Path, metavar="NEW_RUN")
    p.add_argument("--out", type=out_path, help="where compare.md/.csv go (default: NEW_RUN)")
    add_compare_options(p)
    args = p.parse_args(argv)
    for run in (args.baseline, args.new):
        if not run.is_dir():
            raise UsageError(f"{run}: no such run folder")
    return args.baseline, args.new, compare_settings(args), args.out, args.allow_inconclusive


def parse_export_args(argv: list[str]) -> tuple[Path, Path | None]:
    p = Parser(
        prog=f"{PROG} export",
        description="Write a run as one JSON list, one object per case: its stored columns, "
        "the derived figures (TFLOP/s, fraction of peak, speedup and memory saving against "
        "each full-attention yardstick) and the run's description; pandas.read_json reads it.",
    )
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=out_path, help="the JSON file (default: RUN_DIR/results.json)")
    args = p.parse_args(argv)
    if not args.run.is_dir():
        raise UsageError(f"{args.run}: no such run folder")
    return args.run, args.out


def parse_baseline_args(argv: list[str]) -> tuple[Path, str, bool]:
    p = Parser(prog=f"{PROG} baseline", description="Store a run as a named baseline.")
    sub = p.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save", help="copy RUN_DIR to results/baselines/NAME/")
    save.add_argument("run", type=Path, metavar="RUN_DIR")
    save.add_argument("name", metavar="NAME")
    save.add_argument("--replace", action="store_true", help="overwrite an existing baseline")
    args = p.parse_args(argv)
    if not args.run.is_dir():
        raise UsageError(f"{args.run}: no such run folder")
    return args.run, args.name, args.replace
