"""``run_bench.py``: validate the command line, describe the run, sweep, summarise."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from harness import baselines, checks, machine, reference_op, storage
from harness.checks import CheckSettings
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
from harness.config import SweepConfig
from harness.inputs import dtype_name
from harness.listing import backend_table, format_table
from harness.runner import run_sweep
from harness.summary import summary_tables


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
    """``compare BASELINE_RUN NEW_RUN``: 1 when a case regressed, else 0."""
    base, new, settings, out = parse_compare_args(argv)
    return _check(base, new, settings, out)


def _check(base: Path, new: Path, settings: CheckSettings, out: Path | None = None) -> int:
    table, bad, path = checks.compare(base, new, settings, out)
    print(checks.display_table(table).to_markdown(index=False))
    counts = ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts().items())
    print(f"\n{counts}; written to {path} and {path.with_suffix('.csv')}")
    if bad:
        print(f"{PROG}: regression against {base}", file=sys.stderr)
    return 1 if bad else 0


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
        return 130
    meta["reference_op"]["after"] = reference_op.measure_reference(
        config.device, config.timing, config.threads
    )
    storage.write_meta(config.out_dir, meta)
    print(summary_tables(storage.read_results(config.out_dir)))
    print(f"\nresults: {config.out_dir / storage.RESULTS}  meta: {config.out_dir / storage.META}")
    if report_after:
        report([str(config.out_dir)])
    if against is not None:
        return _check(against, config.out_dir, check_settings(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except (UsageError, storage.RunFolderError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
