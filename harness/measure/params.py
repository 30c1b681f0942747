"""How a backend declares its parameters: a frozen dataclass (the backend's ``Params``) whose
fields are declared with ``param``, which carries the field's command-line flag, help and lower
bound as metadata. The command line is generated from these declarations (``harness.cli.flags``):
a new family brings its flags by declaring its parameters, and nothing else lists them.

A field declared without ``param`` is a parameter that the command line does not set.

A kernel that takes only some of its family's parameters declares them with ``narrowed``: the
family's fields, declared once (type, default, flag and help), not written again.

Torch-free, and written so that the declarations can be read from a module's source without
importing it (``harness.cli.flags.declared_flags``): ``--help`` answers without loading torch.
"""

from __future__ import annotations

import dataclasses
import sys
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
    default: Any,
    flag: str,
    help: str,
    *,
    low: int | None = None,
    metavar: str | None = None,
    for_all: bool = False,
    kernel: bool = False,
) -> Any:
    """A ``Params`` field set on the command line by ``flag`` (``"--window"``; a bool that is
    on by default is turned off by a ``"--no-..."`` flag). ``help`` says what it is, without
    its default (shown beside it); ``low`` is the smallest value the command line accepts.
    ``for_all``: the parameter changes what attention computes, not how (causal): when it is
    set, every selected backend must take it, so that results of two problems never sit side
    by side. ``kernel``: it chooses how a kernel computes, not what (a chunk size of a scan):
    left out of the pattern a backend computes (``pattern_values``)."""
    meta = {"flag": flag, "help": help, "low": low, "metavar": metavar, "for_all": for_all,
            "kernel": kernel}  # fmt: skip
    return dataclasses.field(default=default, metadata=meta)


def family_params(params: type) -> type:
    """The family's ``Params`` that ``params`` was narrowed from (``narrowed``), or itself."""
    return getattr(params, "__narrowed_from__", params)


def pattern_values(params: Any, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values of every parameter of the family of ``params`` (an instance of a ``Params``
    or of a narrowed one): its own, then ``fixed`` (what a backend without such a field
    computes), then the family's defaults; parameters declared ``kernel`` left out."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    values |= fixed or {}
    out = {}
    for f in dataclasses.fields(family_params(type(params))):
        if f.metadata.get("kernel"):
            continue
        if f.name in values:
            out[f.name] = values[f.name]
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def narrowed(params: type, *names: str, qualname: str) -> type:
    """A frozen dataclass with only the fields ``names`` of the dataclass ``params``, each as
    declared there (type, default, metadata: the same command-line flags), in that order.

    ``qualname`` is where the caller binds it (``"XformersLongformer.Params"``) and its module the
    caller's, so that its instances pickle (case processes receive them) and it reads as what it
    is in reprs and errors.
    """
    declared = {f.name: f for f in dataclasses.fields(params)}
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ValueError(f"{params.__qualname__} has no field {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a field named twice: {', '.join(names)}")
    specs = []
    for name in names:
        f = declared[name]
        spec = dataclasses.field(
            default=f.default,
            default_factory=f.default_factory,
            init=f.init,
            repr=f.repr,
            hash=f.hash,
            compare=f.compare,
            metadata=f.metadata,
            kw_only=f.kw_only,
        )
        specs.append((name, f.type, spec))
    short = qualname.rpartition(".")[2]
    cls = dataclasses.make_dataclass(short, specs, frozen=True)
    cls.__qualname__ = qualname
    cls.__module__ = sys._getframe(1).f_globals.get("__name__", "__main__")
    cls.__doc__ = f"The fields {', '.join(names)} of {params.__qualname__}, declared there."
    cls.__narrowed_from__ = family_params(params)
    return cls


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
    for_all: bool
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
        return cls(name, meta["flag"], kind, meta["low"], meta["metavar"], meta["for_all"],
                   ((family, meaning),))  # fmt: skip

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
        differ = [
            a for a in ("dest", "kind", "low", "for_all") if getattr(seen, a) != getattr(f, a)
        ]
        if differ:
            first, other = seen.meanings[0][0], f.meanings[0][0]
            said = ", ".join(f"{a} {getattr(seen, a)!r} vs {getattr(f, a)!r}" for a in differ)
            raise ValueError(f"{f.flag} is declared one way in {first} and another in {other} "
                             f"({said})")  # fmt: skip
        meanings = tuple(dict.fromkeys(seen.meanings + f.meanings))
        out[f.flag] = dataclasses.replace(seen, meanings=meanings)
    return list(out.values())
