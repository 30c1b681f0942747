"""``run_bench.py``: validate the command line, describe the run, sweep, summarise."""

from __future__ import annotations

import sys

import torch

from harness import machine, storage
from harness.cli import (
    PROG,
    UsageError,
    build_config,
    build_parser,
    parse_report_args,
    resolve_device,
    resolve_dtype,
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


def run(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        return report(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list_backends:
        device = resolve_device(args.device)
        print(format_table(backend_table(device, resolve_dtype(args.dtype, device))))
        return 0
    config = build_config(args)
    report_after = args.report
    threads = config.threads or torch.get_num_threads()
    meta = machine.describe(config.device, threads, [PROG, *argv])
    meta["config"] = describe_config(config)
    if config.resume and (config.out_dir / storage.META).exists():
        first = storage.read_meta(config.out_dir)
        first.setdefault("resumed", []).append(meta)
        meta = first
    storage.write_meta(config.out_dir, meta)
    print(f"sweep: {len(config.cases())} cases on {meta['device_name']} -> {config.out_dir}",
          file=sys.stderr)  # fmt: skip
    try:
        run_sweep(config, progress=_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cases are in {config.out_dir}; add --resume to complete",
              file=sys.stderr)  # fmt: skip
        return 130
    print(summary_tables(storage.read_results(config.out_dir)))
    print(f"\nresults: {config.out_dir / storage.RESULTS}  meta: {config.out_dir / storage.META}")
    if report_after:
        return report([str(config.out_dir)])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except (UsageError, storage.RunFolderError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
