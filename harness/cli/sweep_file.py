"""``--config FILE``: a sweep's options from a TOML file, one key per long option without its
dashes (``head_dim = [64, 128]`` for ``--head-dim 64 128``, ``causal = [true, false]``,
``no_shared_qk = true``), the command line overriding any key it gives.

Each value goes through the option's own argparse type and choices and becomes the parser's
default (``apply``), so that a file is checked as the flags are; a run folder's ``sweep.toml``
(``harness.sweep.resolved``) is such a file. Paths in it are relative to the current folder, as
on the command line."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from harness.cli.cli_args import Parser, UsageError, baseline_name, fraction, on_off, out_path

# options that are no sweep setting: what the file would set is the file itself, or a listing
NOT_KEYS = ("help", "config", "list_backends", "format")
_TEXT_TYPES = (None, out_path, baseline_name)
_EITHER_TYPES = (fraction,)  # "10%" or 0.1


def config_in(argv: list[str]) -> Path | None:
    """The file ``--config`` names in ``argv`` (the last one), before the rest is parsed: its
    ``import`` modules bring flags of their own."""
    p = Parser(add_help=False)
    p.add_argument("--config", type=Path)
    return p.parse_known_args(argv)[0].config


def read(path: Path) -> dict[str, Any]:
    """The file's table; a missing or malformed file is bad input."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not TOML: {exc}") from None


def imports(table: dict[str, Any], path: Path) -> list[str]:
    """The modules its ``import`` key names (imported before the parser is built)."""
    value = table.get("import", [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: import: expected a module name or a list of them")
    return value


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """key -> the option it sets: every long option of ``parser``, its dashes made underscores
    (aliases too: ``passes`` is ``modes``); not the hidden ones, nor ``NOT_KEYS``."""
    out = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            key = option.removeprefix("--").replace("-", "_")
            if option.startswith("--") and key not in NOT_KEYS:
                out[key] = action
    return out


def apply(parser: argparse.ArgumentParser, table: dict[str, Any], path: Path) -> None:
    """The file's values as ``parser``'s defaults (bad input: one line naming key and file)."""
    known = options(parser)
    defaults: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in table.items():
        action = known.get(key)
        if action is None:
            raise UsageError(
                f"{path}: unknown key {key!r} (the keys are the long options without their "
                "dashes, e.g. head_dim for --head-dim)"
            )
        if action.dest in given:
            raise UsageError(f"{path}: {key} and {given[action.dest]} set the same option")
        given[action.dest] = key
        try:
            defaults[action.dest] = _converted(action, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise UsageError(f"{path}: {key}: {exc}") from None
    parser.set_defaults(**defaults)


def _converted(action: argparse.Action, value: Any) -> Any:
    if action.nargs == 0:  # a switch: store_true, store_false
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, not {_shown(value)}")
        return action.const if value else action.default
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if not items and action.nargs == "+":
            raise ValueError("an empty list: give at least one value")
        return [_item(action, v) for v in items]
    if isinstance(value, list):
        raise TypeError(f"expected one value, not a list: {_shown(value)}")
    return _item(action, value)


def _item(action: argparse.Action, value: Any) -> Any:
    """One value through the option's type and choices, as if given on the command line."""
    kind = action.type
    if kind is on_off:
        if not isinstance(value, (bool, str)):
            raise TypeError(f"expected true or false, not {_shown(value)}")
        text = ("on" if value else "off") if isinstance(value, bool) else value
    elif kind in _TEXT_TYPES:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, not {_shown(value)}")
        text = value
    elif kind in _EITHER_TYPES:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"expected a number or a string, not {_shown(value)}")
        text = repr(value) if isinstance(value, float) else str(value)
    else:  # a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, not {_shown(value)}")
        text = repr(value) if isinstance(value, float) else str(value)
    converted = kind(text) if kind is not None else text
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"{converted!r} is not one of {choices}")
    return converted


def _shown(value: Any) -> str:
    kind = {bool: "a bool", str: "a string", int: "an integer", float: "a number",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip
    return f"{kind} ({value!r})" if not isinstance(value, dict) else kind
