"""The command line: parse and validate once, build the SweepConfig, hand it down.

Bad input gets one line on stderr and exit code 2; nothing below this module sees argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import shlex
from pathlib import Path
from typing import NoReturn

import torch

from harness import limits, validation
from harness.config import PASSES, SweepConfig
from harness.inputs import DTYPES
from harness.records import METRICS
from harness.registry import backend_names, get_backend_class
from harness.regression import CheckSettings, Tolerances, parse_fraction
from harness.timing import TimingSettings

PROG = "run_bench.py"
DEFAULT_LENGTHS = (1024, 2048, 4096)

# command-line flag -> field name in the backends' Params dataclasses
PARAM_FLAGS = {
    "window": "window",
    "dilation": "dilation",
    "global_tokens": "global_tokens",
    "causal": "causal",
    "block_size": "block_size",
    "global_blocks": "global_blocks",
    "random_blocks": "random_blocks",
    "hashes": "n_hashes",
    "buckets": "n_buckets",
    "chunk_size": "chunk_size",
    "shared_qk": "shared_qk",
}


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive(kind: type[int] | type[float], most: float = math.inf, why: str = ""):
    """An argparse type: a positive, finite number of ``kind``, at most ``most`` (``why``: the
    reason for that bound, for the message)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {_NAMES[kind]}: {text!r}") from None
        if not value > 0:  # NaN too
            raise argparse.ArgumentTypeError(f"must be positive: {value}")
        if not value <= most:  # inf too
            bound = f"{most:,}" if isinstance(most, int) else f"{most:g}"
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"must be at most {bound}{reason}: {value:g}")
        return value

    return parse


_NAMES = {int: "an integer", float: "a number"}


def _bounded_int(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {value}")
        return value

    return parse


def _out_path(text: str) -> Path:
    """An argparse type: a folder path; an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a folder")
    return Path(text)


def _baseline_name(text: str) -> str:
    if not text:  # "" would read as no --check-against at all, and sweep unchecked
        raise argparse.ArgumentTypeError("empty: name a baseline")
    return text


_positive_int, _positive_float = _positive(int), _positive(float)
_length = _positive(int, limits.MAX_LENGTH, "2^24 tokens: no device measures a longer sequence")
HOUR, DAY = 3600.0, 86400.0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Benchmark attention backends across sequence lengths: time, memory, error.",
        epilog=f"Reports: '{PROG} report RUN_DIR' writes report.md, report.html and figures into "
        f"a run folder; '{PROG} report RUN_A RUN_B' compares two runs (ratios B/A). Regression "
        f"checks: '{PROG} compare BASELINE_RUN NEW_RUN' (exit 1 on a regression), "
        f"'{PROG} baseline save RUN_DIR NAME'.",
    )
    p.add_argument(
        "--list-backends", action="store_true", help="list backends and whether they can run here"
    )
    s = p.add_argument_group("sweep")
    s.add_argument(
        "--lengths",
        nargs="+",
        type=_length,
        metavar="N",
        help=f"sequence lengths (default: {' '.join(map(str, DEFAULT_LENGTHS))})",
    )
    s.add_argument("--backends", nargs="+", metavar="NAME", help="backends to run (default: all)")
    s.add_argument(
        "--passes",
        nargs="+",
        choices=PASSES,
        default=list(PASSES),
        help="fwd: forward; fwdbwd: forward + backward (default: both)",
    )
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    s.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    grid = "CUDA's grid dimension, where kernels put it"
    s.add_argument("--batch", type=_positive(int, limits.MAX_BATCH, grid), default=1)
    s.add_argument("--heads", type=_positive(int, limits.MAX_HEADS, grid), default=4)
    s.add_argument(
        "--head-dim", type=_positive(int, limits.MAX_HEAD_DIM, "16x the largest in use"),
        default=64,
    )  # fmt: skip
    s.add_argument(
        "--seed", type=_bounded_int(0, limits.MAX_SEED), default=0,
        help="seeds inputs and random patterns (0 to 2^63 - 1)",
    )  # fmt: skip
    s.add_argument("--out", type=_out_path, help="run folder (default: results/<time>-<device>)")
    s.add_argument(
        "--resume", action="store_true", help="complete the run in --out, skipping finished cases"
    )
    s.add_argument(
        "--report", action="store_true", help="write the run's report when the sweep is done"
    )
    s.add_argument(
        "--check-against", metavar="NAME", type=_baseline_name,
        help="sweep what baseline NAME (results/baselines/NAME) measured, with its options "
        "unless given here, then compare with it; exit 1 on a regression, 3 when a case "
        "could not be decided",
    )  # fmt: skip
    s.add_argument(
        "--rechecks", type=_bounded_int(0, 5), default=2, metavar="R",
        help="--check-against: measure inconclusive and regressed cases again, with twice the "
        "processes, up to R more rounds before deciding (2)",
    )  # fmt: skip
    b = p.add_argument_group("backend parameters (each backend takes those it has)")
    b.add_argument("--window", type=_positive_int, help="longformer: one-sided window w (256)")
    b.add_argument("--dilation", type=_positive_int, help="longformer: dilation d (1)")
    b.add_argument(
        "--global-tokens",
        type=_bounded_int(-limits.MAX_LENGTH, limits.MAX_LENGTH - 1),
        nargs="+",
        metavar="POS",
        help="longformer: global token positions, negative from the end (none)",
    )
    b.add_argument(
        "--causal", action="store_true", default=None, help="full-*, longformer: keys j <= i only"
    )
    b.add_argument("--block-size", type=_positive_int, help="bigbird: block size b (64)")
    b.add_argument("--global-blocks", type=int, help="bigbird: global blocks at each end g (1)")
    b.add_argument("--random-blocks", type=int, help="bigbird: random blocks per row r (3)")
    b.add_argument("--hashes", type=_positive_int, help="reformer: hash rounds (4)")
    b.add_argument("--buckets", type=_positive_int, help="reformer: buckets, even (about N/chunk)")
    b.add_argument("--chunk-size", type=_positive_int, help="reformer: chunk size c (64)")
    b.add_argument(
        "--no-shared-qk",
        dest="shared_qk",
        action="store_false",
        default=None,
        help="reformer: hash separate keys instead of the normalised queries",
    )
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--min-time",
        type=_positive(float, HOUR),
        default=0.5,
        help="seconds of timing per case (0.5)",
    )
    m.add_argument(
        "--min-repeats",
        type=_positive(int, 10**6),
        default=5,
        help="samples per case at least (5)",
    )
    m.add_argument(
        "--warmup", type=_positive(float, HOUR), default=0.2, help="seconds of warm-up (0.2)"
    )
    m.add_argument(
        "--processes",
        type=_positive(int, 1000),
        default=1,
        metavar="K",
        help="time each case in K fresh processes, one after another (1); the regression "
        "check then judges the K medians, which shared machines need (5 or more)",
    )
    m.add_argument(
        "--case-timeout",
        type=_positive(float, DAY),
        default=300.0,
        help="seconds before a case is stopped and recorded as timeout (300)",
    )
    m.add_argument(
        "--threads", type=_positive(int, 4096), help="CPU threads (default: torch's choice)"
    )
    m.add_argument(
        "--check-rows",
        type=_positive(int, limits.MAX_LENGTH, "no length has more rows"),
        default=128,
        help="query rows compared with the dense reference per case (128)",
    )
    add_check_options(p)
    return p  # fmt: skip


def build_report_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"{PROG} report",
        description="Report one run (RUN_DIR), or compare two (RUN_A RUN_B: ratios B/A). Reads "
        "only the runs' results.csv and meta.json.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="one or two run folders")
    p.add_argument(
        "--out", type=_out_path, help="comparison folder (default: RUN_B/vs-<name of RUN_A>)"
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


def _fraction(text: str) -> float:
    try:
        return parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_check_options(p: argparse.ArgumentParser) -> None:
    """Tolerances of a regression check, shared by ``compare`` and ``--check-against``."""
    g = p.add_argument_group("regression check")
    g.add_argument(
        "--time-tolerance",
        type=_fraction,
        default=Tolerances.time,
        metavar="FRACTION",
        help="slowdown allowed before a significant one fails, e.g. 10%% or 0.1 (10%%)",
    )
    g.add_argument(
        "--memory-tolerance",
        type=_fraction,
        default=Tolerances.memory,
        metavar="FRACTION",
        help="memory growth allowed on CUDA (1%%); on CPU max(5%%, 2 MiB) as RSS has slack",
    )
    g.add_argument(
        "--normalise",
        action="store_true",
        help="divide times by each run's reference matmul, so that runs on days when the "
        "machine ran at another speed compare fairly",
    )
    g.add_argument(
        "--metric",
        choices=list(METRICS),
        default="wall",
        help="which time to judge: wall (default) or cpu, the process's CPU time, which other "
        "work on the machine hardly changes for single-threaded cases (record with --threads 1)",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="judge every case on its statistics, even one measured under unstable conditions "
        "(otherwise inconclusive)",
    )
    g.add_argument(
        "--allow-inconclusive", action="store_true",
        help="exit 0 instead of 3 when no case regressed but some could not be decided",
    )  # fmt: skip


# Options that say where a run goes and how it is judged, not what it measures: a baseline's
# own values of these are not carried over to the run checked against it
NOT_CARRIED = ("out", "resume", "report", "check_against", "list_backends", "time_tolerance",
               "memory_tolerance", "normalise", "metric", "strict", "allow_inconclusive",
               "rechecks")  # fmt: skip


HELP = {"-h", "--help"}


def with_recorded_options(argv: list[str], source: str, command: object) -> argparse.Namespace:
    """``argv`` parsed on top of the sweep options of a recorded ``command`` (a baseline's, or
    the run's that ``--resume`` completes): what is given in ``argv`` wins, the rest is what
    was measured. ``source`` names where the command comes from, for errors."""
    parser = build_parser()
    if not isinstance(command, str):  # shlex.split(None) would read standard input
        raise UsageError(f"{source}: its meta.json holds no command line")
    try:
        tokens = shlex.split(command)[1:]
        if HELP.intersection(tokens):  # argparse would print help and exit 0, measuring nothing
            raise UsageError(f"it asks for help ({' '.join(sorted(HELP.intersection(tokens)))})")
        recorded = parser.parse_args(tokens)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"{source}: its command line does not parse: {exc}") from None
    for dest in NOT_CARRIED:
        delattr(recorded, dest)
    # argparse fills in a default only for what the namespace does not hold yet
    return parser.parse_args(argv, namespace=recorded)


def check_settings(args: argparse.Namespace) -> CheckSettings:
    tolerances = Tolerances(time=args.time_tolerance, memory=args.memory_tolerance)
    return CheckSettings(
        tolerances=tolerances, metric=args.metric, normalise=args.normalise, strict=args.strict
    )


def parse_compare_args(argv: list[str]) -> tuple[Path, Path, CheckSettings, Path | None, bool]:
    """(baseline, new run, settings, --out, --allow-inconclusive)."""
    p = _Parser(
        prog=f"{PROG} compare",
        description="Judge NEW_RUN against BASELINE_RUN case by case; exit 1 when a case "
        "regressed (slower beyond tolerance and significant, hungrier, or newly failing), 3 "
        "when none did but a case could not be decided (measured under unstable conditions), "
        "0 otherwise.",
    )
    p.add_argument("baseline", type=Path, metavar="BASELINE_RUN")
    p.add_argument("new", type=Path, metavar="NEW_RUN")
    p.add_argument("--out", type=_out_path, help="where compare.md/.csv go (default: NEW_RUN)")
    add_check_options(p)
    args = p.parse_args(argv)
    for run in (args.baseline, args.new):
        if not run.is_dir():
            raise UsageError(f"{run}: no such run folder")
    return args.baseline, args.new, check_settings(args), args.out, args.allow_inconclusive


def parse_baseline_args(argv: list[str]) -> tuple[Path, str, bool]:
    p = _Parser(prog=f"{PROG} baseline", description="Store a run as a named baseline.")
    sub = p.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save", help="copy RUN_DIR to results/baselines/NAME/")
    save.add_argument("run", type=Path, metavar="RUN_DIR")
    save.add_argument("name", metavar="NAME")
    save.add_argument("--replace", action="store_true", help="overwrite an existing baseline")
    args = p.parse_args(argv)
    if not args.run.is_dir():
        raise UsageError(f"{args.run}: no such run folder")
    return args.run, args.name, args.replace


def resolve_device(text: str) -> str:
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {text!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {text} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {text} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise UsageError(f"device type {device.type!r} is not supported (cpu or cuda)")
    return text


def resolve_dtype(text: str, device: str) -> torch.dtype:
    if text == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtype = DTYPES[text]
    if device.startswith("cuda") and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError(f"dtype bfloat16 is not supported by {torch.cuda.get_device_name(device)}")
    try:  # the operations attention needs, on a tiny input
        x = torch.ones(2, 2, dtype=dtype, device=device)
        (x @ x).softmax(-1)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"dtype {text} does not work on {device}: {exc}") from None
    return dtype


def resolve_out(args: argparse.Namespace, device: str) -> Path:
    out = args.out
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("results") / f"{stamp}-{device.replace(':', '')}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    # whether it already holds results is checked under the run folder's lock (harness.app)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


def _check_params_apply(config: SweepConfig) -> None:
    """A parameter no selected backend takes is a mistake; causal must hold for all of them, or
    causal and non-causal results would sit side by side as if comparable."""
    takes = {
        name: {f.name for f in dataclasses.fields(get_backend_class(name).Params)}
        for name in config.backends
    }
    flags = {field: "--" + dest.replace("_", "-") for dest, field in PARAM_FLAGS.items()}
    flags["shared_qk"] = "--no-shared-qk"  # the only flag that turns a default off
    for field, value in config.param_overrides:
        flag = flags[field]
        without = [name for name, fields in takes.items() if field not in fields]
        if len(without) == len(takes):
            raise UsageError(f"{flag} applies to none of the selected backends")
        if field == "causal" and value and without:
            raise UsageError(f"{flag}: {', '.join(without)} have no causal mode")


def build_config(args: argparse.Namespace) -> SweepConfig:
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
    overrides = []
    for flag, field in PARAM_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append((field, tuple(value) if isinstance(value, list) else value))
    lengths = tuple(dict.fromkeys(args.lengths or DEFAULT_LENGTHS))
    if len(args.global_tokens or ()) > limits.MAX_GLOBAL_TOKENS:
        raise UsageError(
            f"--global-tokens: {len(args.global_tokens)} positions, at most "
            f"{limits.MAX_GLOBAL_TOKENS} (each is a dense row: more is full attention)"
        )
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
        param_overrides=tuple(overrides),
        timing=TimingSettings(
            warmup_s=args.warmup, min_time_s=args.min_time, min_repeats=args.min_repeats,
            max_time_s=max(60.0, 4 * args.min_time),
        ),
        case_timeout_s=args.case_timeout,
        processes=args.processes,
        check_rows=args.check_rows,
        resume=args.resume,
        threads=args.threads,
    )  # fmt: skip
    _check_params_apply(config)
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
