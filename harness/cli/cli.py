"""The command line: parse and validate once, build the SweepConfig, hand it down.

Bad input gets one line on stderr and exit code 2; nothing below this module sees argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
from argparse import SUPPRESS
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli import flags
from harness.cli.cli_args import (
    DAY,
    DTYPE_NAMES,
    HOUR,
    PASS_NAMES,
    PROG,
    Parser,
    UsageError,
    add_compare_options,
    baseline_name,
    bounded_int,
    length,
    out_path,
    positive,
    resolve_device,
    resolve_dtype,
    resolve_out,
)
from harness.store import limits
from harness.sweep.order import ORDERS

if TYPE_CHECKING:  # the rest imports torch: only once real arguments are parsed, not for --help
    from harness.measure.params import Flag
    from harness.sweep.config import SweepConfig

DEFAULT_LENGTHS = (1024, 2048, 4096)
HELP = {"-h", "--help"}


def imports_in(argv: list[str]) -> list[str]:
    """The modules ``--import`` names in ``argv`` (before the rest is parsed: their backends
    bring flags of their own)."""
    p = Parser(add_help=False)
    p.add_argument("--import", dest="imports", nargs="+", action="extend", default=[])
    return list(dict.fromkeys(p.parse_known_args(argv)[0].imports))


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The sweep's parser for ``argv``, with a flag for every backend parameter: for ``--help``
    read from the built-in families' source (``flags.declared_flags``: no torch, so help
    answers at once), otherwise from the registry once ``argv``'s ``--import`` modules are
    imported (``flags.registry_flags``). Where installed packages declare backends (entry
    points), help too takes the registry's, so that it lists their flags."""
    if HELP.intersection(argv) and "--import" not in argv and not flags.entry_points_installed():
        return build_parser(flags.declared_flags())
    import_backends(imports_in(argv))
    try:
        return build_parser(flags.registry_flags())
    except (TypeError, ValueError) as exc:  # an outside backend's declaration clashes
        raise UsageError(f"backend parameters: {exc}") from None


def import_backends(modules: list[str]) -> None:
    """``--import``: before the backends are looked up; a failure is bad input (one line)."""
    from harness.measure.registry import BackendImportError, import_modules

    try:
        import_modules(tuple(modules))
    except BackendImportError as exc:
        raise UsageError(str(exc)) from None


def build_parser(backend_flags: list[Flag]) -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Benchmark attention backends across sequence lengths: time, memory, error.",
        epilog=f"Commands that read stored runs: '{PROG} report RUN_DIR' writes report.md, "
        f"report.html and figures into a run folder; '{PROG} compare BASELINE_RUN NEW_RUN' "
        "judges every case (exit 1 on a regression, 3 when a case could not be decided) and "
        f"writes the side-by-side report; '{PROG} baseline save RUN_DIR NAME'; '{PROG} "
        f"upgrade RUN_DIR' rewrites a run of an older format; '{PROG} gpu-check' runs the GPU "
        "check (its --help says what).",
    )
    p.add_argument(
        "--list-backends", action="store_true", help="list backends and whether they can run here"
    )
    p.add_argument(
        "--format", choices=["table", "json"], default="table",
        help="of --list-backends: a table (default), or JSON (one object per backend)",
    )  # fmt: skip
    s = p.add_argument_group("sweep")
    s.add_argument(
        "--lengths",
        nargs="+",
        type=length,
        metavar="N",
        help=f"sequence lengths (default: {' '.join(map(str, DEFAULT_LENGTHS))})",
    )
    s.add_argument("--backends", nargs="+", metavar="NAME", help="backends to run (default: all)")
    s.add_argument(
        "--passes",
        nargs="+",
        choices=PASS_NAMES,
        default=list(PASS_NAMES),
        help="fwd: forward; fwdbwd: forward + backward (default: both)",
    )
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    s.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPE_NAMES],
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    grid = "CUDA's grid dimension, where kernels put it"
    s.add_argument("--batch", type=positive(int, limits.MAX_BATCH, grid), default=1)
    s.add_argument("--heads", type=positive(int, limits.MAX_HEADS, grid), default=4)
    s.add_argument(
        "--head-dim", type=positive(int, limits.MAX_HEAD_DIM, "16x the largest in use"),
        default=64,
    )  # fmt: skip
    s.add_argument(
        "--seed", type=bounded_int(0, limits.MAX_SEED), default=0,
        help="seeds inputs and random patterns (0 to 2^63 - 1)",
    )  # fmt: skip
    s.add_argument(
        "--import", dest="imports", nargs="+", action="extend", metavar="MODULE",
        help="import these modules first, so that the backends they register can be named "
        "in --backends (backends from outside this package; also entry points of the group "
        "attention_bench.backends)",
    )  # fmt: skip
    s.add_argument("--out", type=out_path, help="run folder (default: results/<time>-<device>)")
    s.add_argument(
        "--resume", action="store_true", help="complete the run in --out, skipping finished cases"
    )
    s.add_argument(
        "--report", action="store_true", help="write the run's report when the sweep is done"
    )
    s.add_argument(
        "--time-budget", type=positive(float, 30 * DAY), metavar="SECONDS",
        help="start no case after this long; the finished ones are kept and --resume runs "
        "the rest",
    )  # fmt: skip
    s.add_argument(
        "--order", choices=ORDERS, default="ascending",
        help="of the lengths: ascending (default), or coarse-first: every other length first, "
        "then those between, so that a sweep cut short still spans the range",
    )  # fmt: skip
    s.add_argument(
        "--compare-to", metavar="NAME", type=baseline_name,
        help="sweep what baseline NAME (results/baselines/NAME) measured, with its options "
        "unless given here, then compare with it; exit 1 on a regression, 3 when a case "
        "could not be decided",
    )  # fmt: skip
    s.add_argument(
        "--remeasure", type=bounded_int(0, 5), default=2, metavar="R",
        help="--compare-to: measure inconclusive and regressed cases again, with twice the "
        "processes, up to R more rounds before deciding (2)",
    )  # fmt: skip
    # the names these had before "check" came to mean the output check only (DEPRECATED)
    s.add_argument("--check-against", dest="compare_to", type=baseline_name, help=SUPPRESS)
    s.add_argument("--rechecks", dest="remeasure", type=bounded_int(0, 5), help=SUPPRESS)
    flags.add_flags(p, backend_flags)
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--min-time",
        type=positive(float, HOUR),
        default=0.5,
        help="seconds of timing per case (0.5)",
    )
    m.add_argument(
        "--min-repeats",
        type=positive(int, 10**6),
        default=5,
        help="samples per case at least (5)",
    )
    m.add_argument(
        "--warmup", type=positive(float, HOUR), default=0.2, help="seconds of warm-up (0.2)"
    )
    m.add_argument(
        "--processes",
        type=positive(int, 1000),
        default=1,
        metavar="K",
        help="time each case in K fresh processes, one after another (1); the regression "
        "check then judges the K medians, which shared machines need (5 or more)",
    )
    m.add_argument(
        "--case-timeout",
        type=positive(float, DAY),
        default=300.0,
        help="seconds before a case is stopped and recorded as timeout (300)",
    )
    m.add_argument(
        "--threads", type=positive(int, 4096), help="CPU threads (default: torch's choice)"
    )
    m.add_argument(
        "--check-rows",
        type=positive(int, limits.MAX_LENGTH, "no length has more rows"),
        default=128,
        help="query rows compared with the dense reference per case (128)",
    )
    add_compare_options(p)
    return p  # fmt: skip


def _validate_params_apply(config: SweepConfig, backend_flags: list[Flag]) -> None:
    """A parameter no selected backend takes is a mistake; one that changes what attention
    computes (``for_all``, such as causal) must apply to all of them, or results of two
    problems would sit side by side as if comparable."""
    from harness.measure.registry import get_backend_class

    takes = {
        name: {f.name for f in dataclasses.fields(get_backend_class(name).Params)}
        for name in config.backends
    }
    by_field = {f.dest: f for f in backend_flags}
    for field, value in [*config.param_overrides, ("causal", config.causal[-1])]:
        if field not in by_field:
            continue
        flag = by_field[field]
        without = [name for name, fields in takes.items() if field not in fields]
        if len(without) == len(takes):
            raise UsageError(f"{flag.flag} applies to none of the selected backends")
        if flag.for_all and value and without:
            raise UsageError(f"{flag.flag}: {', '.join(without)} do not take it")


def build_config(args: argparse.Namespace) -> SweepConfig:
    from harness.cli import validation
    from harness.measure.registry import backend_names
    from harness.measure.timing import TimingSettings
    from harness.sweep.config import SweepConfig

    if args.warmup + args.min_time >= args.case_timeout:
        raise UsageError(
            f"--warmup {args.warmup:g} s and --min-time {args.min_time:g} s do not fit in "
            f"--case-timeout {args.case_timeout:g} s: every case would time out"
        )
    names = args.backends or backend_names()
    known = backend_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}; known: {', '.join(known)}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    backend_flags = flags.registry_flags()
    overrides = flags.given(args, backend_flags)
    lengths = tuple(dict.fromkeys(args.lengths or DEFAULT_LENGTHS))
    problem = validation.size_problem(lengths, args.batch, args.heads, args.head_dim, dtype, device)
    if problem:
        raise UsageError(problem)
    config = SweepConfig(
        lengths=lengths,
        backends=tuple(dict.fromkeys(names)),
        out_dir=Path("."),  # replaced below, once everything else is known to be valid
        passes=tuple(dict.fromkeys(args.passes)),
        device=device,
        dtype=dtype,
        batch=args.batch,
        heads=args.heads,
        head_dim=args.head_dim,
        seed=args.seed,
        param_grid=tuple((k, (v,)) for k, v in overrides if k != "causal"),
        causal=(bool(dict(overrides).get("causal", False)),),
        timing=TimingSettings(
            warmup_s=args.warmup, min_time_s=args.min_time, min_repeats=args.min_repeats,
            max_time_s=max(60.0, 4 * args.min_time),
        ),
        case_timeout_s=args.case_timeout,
        processes=args.processes,
        check_rows=args.check_rows,
        resume=args.resume,
        threads=args.threads,
        imports=tuple(dict.fromkeys(args.imports or ())),
        order=args.order,
        time_budget_s=args.time_budget,
    )  # fmt: skip
    _validate_params_apply(config, backend_flags)
    for name in config.backends:
        try:
            backend = config.make_backend(name)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{name}: bad parameters: {exc}") from None
        for n in lengths:
            errors = backend.param_errors(n)
            if errors:
                raise UsageError(f"{name} at length {n}: {errors[0]}")
    return SweepConfig(**{**config.__dict__, "out_dir": resolve_out(args, device)})
