"""The command line as a run records it in meta.json (``command``): written for a sweep started
from Python (``command_line``), and read back to repeat a run's options (``--resume``) or a
baseline's (``--compare-to``: ``with_recorded_options``)."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from harness.cli.cli import HELP, parser_for
from harness.cli.cli_args import PROG, UsageError

if TYPE_CHECKING:
    from harness.sweep.config import SweepConfig


# Options that say where a run goes and how it is judged, not what it measures: a baseline's
# own values of these are not carried over to the run checked against it
NOT_CARRIED = ("out", "resume", "report", "compare_to", "list_backends", "time_tolerance",
               "memory_tolerance", "normalise", "metric", "strict", "allow_inconclusive",
               "remeasure")  # fmt: skip


def with_recorded_options(argv: list[str], source: str, command: object) -> argparse.Namespace:
    """``argv`` parsed on top of the sweep options of a recorded ``command`` (a baseline's, or
    the run's that ``--resume`` completes): what is given in ``argv`` wins, the rest is what
    was measured. ``source`` names where the command comes from, for errors."""
    if not isinstance(command, str):  # shlex.split(None) would read standard input
        raise UsageError(f"{source}: its meta.json holds no command line")
    try:
        tokens = shlex.split(command)[1:]
        if HELP.intersection(tokens):  # argparse would print help and exit 0, measuring nothing
            raise UsageError(f"it asks for help ({' '.join(sorted(HELP.intersection(tokens)))})")
        parser = parser_for([*tokens, *argv])  # the recorded --import modules' flags too
        recorded = parser.parse_args(tokens)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"{source}: its command line does not parse: {exc}") from None
    for dest in NOT_CARRIED:
        delattr(recorded, dest)
    # argparse fills in a default only for what the namespace does not hold yet
    return parser.parse_args(argv, namespace=recorded)


def command_line(config: SweepConfig) -> list[str]:
    """The command line that sweeps what ``config`` describes (for the meta.json of a sweep
    started from Python, so that ``--resume`` and ``--compare-to`` can repeat it): the words of
    its ``sweep.toml`` (``harness.sweep.resolved``), every axis and parameter grid included."""
    from harness.sweep import resolved

    words = resolved.command_words(resolved.table(config))
    return [PROG, *words, "--out", str(config.out_dir)]
