"""The registry of attention backends: explicit registration by decorator, nothing scanned.

Besides ``attention_impls``, backends come from outside this package in two ways: modules named
with ``--import`` (``import_modules``), and the entry points of the group ``ENTRY_POINT_GROUP``
that installed packages declare, loaded with the registry (each names a module that registers
its backends, or a backend class, registered here)."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a backend is loaded: this module itself needs no torch
    from harness.measure.backend import AttentionBackend

ENTRY_POINT_GROUP = "attention_bench.backends"

_REGISTRY: dict[str, type[AttentionBackend]] = {}
_entry_points: list[str] | None = None  # the names loaded, once they all are


class BackendImportError(ImportError):
    """A module or entry point that should bring backends failed: one line that names it."""


def register(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    """Class decorator: add a backend under its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"backend {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _why(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def import_modules(names: tuple[str, ...] | list[str]) -> None:
    """Import ``names`` (``--import``), so that their ``@register`` decorators run."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module's own failure is as much bad input as a typo
            raise BackendImportError(f"--import {name}: cannot import it ({_why(exc)})") from None


def _load_entry_points() -> None:
    from harness.measure.backend import AttentionBackend

    global _entry_points
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise BackendImportError(
                f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} cannot be "
                f"loaded ({_why(exc)})"
            ) from None
        if isinstance(obj, type) and issubclass(obj, AttentionBackend):
            try:
                register(obj)
            except (AttributeError, ValueError) as exc:
                raise BackendImportError(
                    f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}: "
                    f"{_why(exc)}"
                ) from None
        loaded.append(f"{ep.name} = {ep.value}")
    _entry_points = loaded


def _load() -> None:
    import attention_impls  # noqa: F401  (its imports run the @register decorators)

    if _entry_points is None:
        _load_entry_points()


def loaded_entry_points() -> list[str]:
    """``name = value`` of each entry point of ``ENTRY_POINT_GROUP`` loaded (for meta.json)."""
    _load()
    return list(_entry_points or ())


def backend_names() -> list[str]:
    _load()
    return list(_REGISTRY)


def get_backend_class(name: str) -> type[AttentionBackend]:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
