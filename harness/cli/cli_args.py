"""What every command's parser shares: the program name, the bad-input error, argument types
with their bounds, the comparison options of ``compare`` and ``--compare-to``, and
the resolution of a device, dtype and output folder named on the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from harness.analyse.rules import CompareSettings, Tolerances, parse_fraction
from harness.store import limits
from harness.store.records import METRICS

if TYPE_CHECKING:
    import torch

# torch is imported only where a device or dtype is resolved, so that building the parsers
# (``--help``) does not wait for it; tests/test_api.py checks that these match the names of
# harness.measure.inputs.DTYPES, harness.sweep.config.PASSES (the default modes) and MODES
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
PASS_NAMES = ("fwd", "fwdbwd")
MODE_NAMES = ("fwd", "fwd-grad", "bwd", "fwdbwd")

PROG = "run_bench.py"


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive(kind: type[int] | type[float], most: float = math.inf, why: str = ""):
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


def bounded_int(low: int, high: int):
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


_SWITCH = {"on": True, "true": True, "yes": True, "1": True,
           "off": False, "false": False, "no": False, "0": False}  # fmt: skip


def on_off(text: str) -> bool:
    """An argparse type: a switch, on/off (true/false, yes/no, 1/0 too)."""
    try:
        return _SWITCH[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"not on or off: {text!r}") from None


def out_path(text: str) -> Path:
    """An argparse type: a folder path; an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a folder")
    return Path(text)


def baseline_name(text: str) -> str:
    if not text:  # "" would read as no --compare-to at all, and sweep unchecked
        raise argparse.ArgumentTypeError("empty: name a baseline")
    return text


positive_int, positive_float = positive(int), positive(float)
length = positive(int, limits.MAX_LENGTH, "2^24 tokens: no device measures a longer sequence")
HOUR, DAY = 3600.0, 86400.0


def fraction(text: str) -> float:
    try:
        return parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_compare_options(p: argparse.ArgumentParser) -> None:
    """Tolerances of a comparison, shared by ``compare`` and ``--compare-to``."""
    g = p.add_argument_group("comparison")
    g.add_argument(
        "--time-tolerance",
        type=fraction,
        default=Tolerances.time,
        metavar="FRACTION",
        help="slowdown allowed before a significant one fails, e.g. 10%% or 0.1 (10%%)",
    )
    g.add_argument(
        "--memory-tolerance",
        type=fraction,
        default=Tolerances.memory,
        metavar="FRACTION",
        help="memory growth allowed on CUDA (1%%); on CPU max(5%%, 2 MiB) as RSS has slack",
    )
    g.add_argument(
        "--normalise",
        action="store_true",
        help="divide times by each run's calibration matmul, so that runs on days when the "
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


def compare_settings(args: argparse.Namespace) -> CompareSettings:
    tolerances = Tolerances(time=args.time_tolerance, memory=args.memory_tolerance)
    return CompareSettings(
        tolerances=tolerances, metric=args.metric, normalise=args.normalise, strict=args.strict
    )


def resolve_device(text: str) -> str:
    import torch

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


def resolve_dtype(text: str | list[str], device: str) -> torch.dtype:
    """``text``: a name, or ``--dtype``'s values where one dtype is meant (``--list-backends``)."""
    import torch

    from harness.measure.inputs import DTYPES

    if isinstance(text, list):
        if len(set(text)) != 1:
            raise UsageError(f"one --dtype here, not {len(text)}: {' '.join(text)}")
        text = text[0]
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
    # whether it already holds results is checked under the run folder's lock (harness.cli.app)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # a name of its own: two sweeps started together must not remove each other's probe
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out
