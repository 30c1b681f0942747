"""The registry of attention backends: explicit registration by decorator, nothing scanned."""

from __future__ import annotations

from harness.backend import AttentionBackend

_REGISTRY: dict[str, type[AttentionBackend]] = {}


def register(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    """Class decorator: add a backend under its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"backend {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    import attention_impls  # noqa: F401  (its imports run the @register decorators)


def backend_names() -> list[str]:
    _load()
    return list(_REGISTRY)


def get_backend_class(name: str) -> type[AttentionBackend]:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
