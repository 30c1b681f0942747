"""How a backend declares its parameters: a frozen dataclass (the backend's ``Params``) whose
fields are declared with ``param``, which carries the field's command-line flag, help and lower
bound as metadata. The command line is generated from these declarations (``harness.cli.flags``):
a new family brings its flags by declaring its parameters, and nothing else lists them.

A field declared without ``param`` is a parameter that the command line does not set.

Torch-free, and written so that the declarations can be read from a module's source without
importing it (``harness.cli.flags.declared_flags``): ``--help`` answers without loading torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The parameter types the command line knows, by their annotation as written in the source
KINDS = {
    "int": "int",
    "int | None": "int",
    "float": "float",
    "float | None": "float",
    "bool": "bool",
    "tuple[int, ...]": "ints",
}


def param(
    default: Any, flag: str, help: str, *, low: int | None = None, metavar: str | None = None
) -> Any:
    """A ``Params`` field set on the command line by ``flag`` (``"--window"``; a bool that is
    on by default is turned off by a ``"--no-..."`` flag). ``help`` says what it is, without
    its default (shown beside it); ``low`` is the smallest value the command line accepts."""
    meta = {"flag": flag, "help": help, "low": low, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Flag:
    """One flag of the backend parameters: what the parser needs, and what it means to each
    family that declares it (a flag several families declare, such as ``--causal``, is one
    flag; it sets the same field of each, whose default may differ)."""

    dest: str  # the Params field it sets
    flag: str
    kind: str  # a value of KINDS
    low: int | None
    metavar: str | None
    meanings: tuple[tuple[str, str], ...]  # (family, help with the family's default)

    @classmethod
    def declared(
        cls, name: str, annotation: str, default: Any, meta: dict[str, Any], family: str
    ) -> Flag:
        """The flag of a field ``name: annotation = param(default, **meta)`` of ``family``."""
        if annotation not in KINDS:
            raise TypeError(
                f"{family} parameter {name}: type {annotation!r} cannot be set on the command "
                f"line (one of {', '.join(KINDS)})"
            )
        kind = KINDS[annotation]
        if kind == "bool" and default is True and not meta["flag"].startswith("--no-"):
            raise ValueError(f"{family} parameter {name}: on by default, so its flag is --no-...")
        shown = not (default is None or isinstance(default, bool) or default == ())
        meaning = meta["help"] + (f" ({default})" if shown else "")
        return cls(name, meta["flag"], kind, meta["low"], meta["metavar"], ((family, meaning),))

    @property
    def help(self) -> str:
        """``"full, longformer: keys j <= i only"``: families that mean the same, together."""
        by_text: dict[str, list[str]] = {}
        for family, text in self.meanings:
            by_text.setdefault(text, []).append(family)
        return "; ".join(f"{', '.join(families)}: {text}" for text, families in by_text.items())


def fields_of(params: type, family: str) -> list[Flag]:
    """The flags of a ``Params`` dataclass's ``param`` fields."""
    return [
        Flag.declared(f.name, annotation_text(f.type), f.default, dict(f.metadata), family)
        for f in dataclasses.fields(params)
        if "flag" in f.metadata
    ]


def annotation_text(annotation: Any) -> str:
    """An annotation as its source text (``from __future__ import annotations`` keeps it so)."""
    if isinstance(annotation, str):
        return annotation
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def merged(flags: Iterable[Flag]) -> list[Flag]:
    """One flag per command-line flag, with the meanings of every family that declares it, in
    first-seen order; the declarations must agree on the field it sets and its type."""
    out: dict[str, Flag] = {}
    for f in flags:
        seen = out.get(f.flag)
        if seen is None:
            out[f.flag] = f
            continue
        if (seen.dest, seen.kind, seen.low) != (f.dest, f.kind, f.low):
            first, other = seen.meanings[0][0], f.meanings[0][0]
            raise ValueError(
                f"{f.flag} sets {seen.dest} ({seen.kind}, at least {seen.low}) in {first} but "
                f"{f.dest} ({f.kind}, at least {f.low}) in {other}"
            )
        meanings = tuple(dict.fromkeys(seen.meanings + f.meanings))
        out[f.flag] = dataclasses.replace(seen, meanings=meanings)
    return list(out.values())
