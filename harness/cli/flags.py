"""The backend-parameter flags of the command line, generated from the families' ``Params``
declarations (``harness.measure.params.param``): each flag sets the field of that name in every
selected backend that has it.

Two readers give the same flags (tests/test_cli_flags.py holds them to it):
- ``registry_flags``: the imported backends' ``Params``, the built-in ones, entry points and
  ``--import`` modules included. What a sweep parses with.
- ``declared_flags``: the built-in families read from their source, without importing them (a
  family imports torch: seconds), so that ``--help`` answers at once. Only declarations the
  source spells out are seen: ``param(...)`` fields of dataclasses with literal arguments, in
  the modules ``attention_impls/__init__.py`` imports, each module named after its family.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.cli.cli_args import positive
from harness.measure.params import Flag, fields_of, merged

PACKAGE = "attention_impls"
# Params fields set from an axis of the problem (``SweepConfig.causal``), not from a flag of their
# own: a family with a causal variant computes the causal problem where the axis says so
AXIS_PARAMS = ("causal",)
_INT64 = 2**63 - 1


def registry_flags() -> list[Flag]:
    """The flags of every registered backend's parameters."""
    from harness.measure.registry import backend_names, get_backend_class

    classes = dict.fromkeys(get_backend_class(name) for name in backend_names())
    return merged(f for cls in classes for f in fields_of(cls.Params, cls.family))


def entry_points_installed() -> bool:
    """Whether installed packages declare backends (without loading them, or torch)."""
    from harness.measure.registry import ENTRY_POINT_GROUP

    return bool(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def declared_flags() -> list[Flag]:
    """The flags the built-in families declare, read from source."""
    spec = importlib.util.find_spec(PACKAGE)  # finds it without running its __init__
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent
    flags = []
    for module in _registered_modules(folder / "__init__.py"):
        path = folder / f"{module}.py"
        if path.is_file():
            flags += _declared_in(ast.parse(path.read_text()), family=module)
    return merged(flags)


def _registered_modules(init: Path) -> list[str]:
    """``x`` of each ``from attention_impls import x`` line, in order."""
    tree = ast.parse(init.read_text())
    return [
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE
        for alias in node.names
    ]


def _is_param_call(node: ast.AST | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "param") or (
        isinstance(func, ast.Attribute) and func.attr == "param"
    )


def _declared_in(tree: ast.Module, family: str) -> list[Flag]:
    flags = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            if not _is_param_call(stmt.value):
                continue
            call = stmt.value
            default, flag, text = (ast.literal_eval(a) for a in call.args)
            meta: dict[str, Any] = {"flag": flag, "help": text, "low": None, "metavar": None,
                                    "for_all": False}  # fmt: skip
            meta |= {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            annotation = ast.unparse(stmt.annotation)
            flags.append(Flag.declared(stmt.target.id, annotation, default, meta, family))
    return flags


def _value_type(flag: Flag):
    if flag.kind == "float":
        return positive(float) if flag.low is not None and flag.low > 0 else float

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if flag.low is not None and value < flag.low:
            raise argparse.ArgumentTypeError(f"must be at least {flag.low}: {value}")
        if abs(value) > _INT64:  # whatever the backend checks next, it indexes with int64
            raise argparse.ArgumentTypeError(f"out of range (a 64-bit integer): {value}")
        return value

    return parse


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag]) -> None:
    """The backend-parameter group of the sweep's parser. A flag left out stays None: the
    backend's own default. A number flag takes several values, a grid the backends are swept
    over; a list flag (``--global-tokens``) takes one list; ``causal`` is no flag of this group
    but an axis of the problem (``harness.cli.cli``)."""
    group = parser.add_argument_group(
        "backend parameters (each backend takes those it has; several values: a grid)"
    )
    for f in flags:
        if f.dest in AXIS_PARAMS:
            continue
        text = f.help.replace("%", "%%")
        if f.kind == "bool":
            action = "store_false" if f.flag.startswith("--no-") else "store_true"
            group.add_argument(f.flag, dest=f.dest, action=action, default=None, help=text)
            continue
        group.add_argument(
            f.flag,
            dest=f.dest,
            type=_value_type(f),
            nargs="+",
            metavar=f.metavar or ("X" if f.kind == "float" else "N"),
            help=text,
        )


def grid(args: argparse.Namespace, flags: Iterable[Flag]) -> tuple[tuple[str, tuple], ...]:
    """(field, values) of every flag given, duplicates dropped; a list flag's list is one
    value (a tuple)."""
    out = []
    for f in flags:
        value = getattr(args, f.dest, None)
        if value is None or f.dest in AXIS_PARAMS:
            continue
        if f.kind == "ints":
            out.append((f.dest, (tuple(value),)))
        elif isinstance(value, list):
            out.append((f.dest, tuple(dict.fromkeys(value))))
        else:
            out.append((f.dest, (value,)))
    return tuple(out)
