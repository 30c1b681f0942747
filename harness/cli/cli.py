"""The command line: parse and validate once, build the SweepConfig, hand it down.

Bad input gets one line on stderr and exit code 2; nothing below this module sees argparse.
"""

from __future__ import annotations

import argparse
from argparse import SUPPRESS
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli import flags, sweep_file
from harness.cli.cli_args import (
    DAY,
    DTYPE_NAMES,
    HOUR,
    MODE_NAMES,
    PASS_NAMES,
    PROG,
    Parser,
    UsageError,
    add_compare_options,
    baseline_name,
    bounded_int,
    length,
    on_off,
    out_path,
    positive,
    resolve_device,
    resolve_dtype,
    resolve_out,
)
from harness.store import distributions, limits
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
    points), help too takes the registry's, so that it lists their flags. A ``--config`` file's
    values become the parser's defaults (``sweep_file``), its ``import`` modules imported first."""
    if HELP.intersection(argv) and "--import" not in argv and not flags.entry_points_installed():
        return build_parser(flags.declared_flags())
    path = sweep_file.config_in(argv)
    table = {} if path is None else sweep_file.read(path)
    import_backends(list(dict.fromkeys([*imports_in(argv), *sweep_file.imports(table, path)])))
    try:
        parser = build_parser(flags.registry_flags())
    except (TypeError, ValueError) as exc:  # an outside backend's declaration clashes
        raise UsageError(f"backend parameters: {exc}") from None
    if path is not None:
        sweep_file.apply(parser, table, path)
    return parser


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
        "--modes", "--passes",
        dest="passes",
        nargs="+",
        choices=MODE_NAMES,
        default=list(PASS_NAMES),
        metavar="MODE",
        help="fwd: forward (inference); fwd-grad: the forward of training (autograd records "
        "it); bwd: the backward alone; fwdbwd: forward + backward (default: fwd fwdbwd)",
    )  # fmt: skip
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    s.add_argument(
        "--config", type=Path, metavar="FILE",
        help="read options from a TOML file, one key per long option (head_dim = [64, 128]); "
        "those given here win. A run folder's sweep.toml replays its sweep",
    )  # fmt: skip
    a = p.add_argument_group("the problem's axes (several values: a grid, swept in full)")
    a.add_argument(
        "--dtype", nargs="+", default=["auto"], choices=["auto", *DTYPE_NAMES], metavar="DTYPE",
        help=f"auto (float32 on CPU, bfloat16 on CUDA: the default), {', '.join(DTYPE_NAMES)}",
    )  # fmt: skip
    grid = "CUDA's grid dimension, where kernels put it"
    a.add_argument(
        "--batch", nargs="+", type=positive(int, limits.MAX_BATCH, grid), default=[1],
        metavar="B", help="sequences per call (1)",
    )  # fmt: skip
    a.add_argument(
        "--heads", nargs="+", type=positive(int, limits.MAX_HEADS, grid), default=[4],
        metavar="H", help="query heads (4)",
    )  # fmt: skip
    a.add_argument(
        "--kv-heads", nargs="+", type=positive(int, limits.MAX_HEADS, grid), metavar="N",
        help="key/value heads, each shared by heads/N query heads (grouped-query attention; "
        "1: multi-query); each must divide every --heads (default: as many as heads)",
    )  # fmt: skip
    a.add_argument(
        "--head-dim", nargs="+", type=positive(int, limits.MAX_HEAD_DIM, "16x the largest in use"),
        default=[64], metavar="D", help="per head (64)",
    )  # fmt: skip
    a.add_argument(
        "--q-len", nargs="+", type=length, metavar="M",
        help="queries per sequence, the last M of the length's positions (decoding with a KV "
        "cache; 1: one token); at most every length (default: the length)",
    )  # fmt: skip
    a.add_argument(
        "--documents", nargs="+", type=positive(int, limits.MAX_LENGTH), default=[1],
        metavar="K",
        help="documents of random lengths packed in each sequence, attention within each only "
        "(block-diagonal); at most every length (1)",
    )  # fmt: skip
    a.add_argument(
        "--causal", nargs="*", type=on_off, metavar="on|off",
        help="keys j <= i only, for the families that have a causal variant (the others skip "
        "those cases, saying why); alone: on; 'on off': both (default: off)",
    )  # fmt: skip
    a.add_argument(
        "--inputs", nargs="+", choices=distributions.NAMES, default=[distributions.DEFAULT],
        metavar="DIST",
        help="what q, k and v are drawn from: gaussian (i.i.d. standard normal, the default), "
        "structured (smooth along the sequence, with heavy-hitter keys every query attends, as "
        "in trained models; the README says exactly); both: a grid",
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


def _axis(values: list | None, default: tuple) -> tuple:
    return tuple(dict.fromkeys(values)) if values else default


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
    dtypes = tuple(dict.fromkeys(resolve_dtype(text, device) for text in args.dtype))
    backend_flags = flags.registry_flags()
    lengths = tuple(dict.fromkeys(args.lengths or DEFAULT_LENGTHS))
    config = SweepConfig(
        lengths=lengths,
        backends=tuple(dict.fromkeys(names)),
        out_dir=Path("."),  # replaced below, once everything else is known to be valid
        passes=tuple(dict.fromkeys(args.passes)),
        device=device,
        dtype=dtypes,
        batch=_axis(args.batch, (1,)),
        heads=_axis(args.heads, (4,)),
        kv_heads=_axis(args.kv_heads, (None,)),
        head_dim=_axis(args.head_dim, (64,)),
        q_len=_axis(args.q_len, (None,)),
        documents=_axis(args.documents, (1,)),
        # --causal alone is [] (on); left out, None (off)
        causal=(False,) if args.causal is None else _axis(args.causal, (True,)),
        distribution=_axis(args.inputs, (distributions.DEFAULT,)),
        seed=args.seed,
        param_grid=flags.grid(args, backend_flags),
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
    problem = validation.grid_problem(config)
    if problem:
        raise UsageError(problem)
    validation.check_params(config, backend_flags)
    return SweepConfig(**{**config.__dict__, "out_dir": resolve_out(args, device)})
