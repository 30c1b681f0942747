"""Optional packages as data: whether one imports, and if not, the reason a skipped row shows."""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import cache


@cache
def missing(module: str, distribution: str, extra: str = "peers") -> str | None:
    """Why ``module`` (of the package ``distribution``) cannot be used here, or None when it
    imports. The reason names the install command, so a skipped row says what to do."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install is as much a reason as a missing one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"{distribution} is not installed or does not import ({first}); "
            f"pip install -e '.[{extra}]'"
        )
    return None


def version(distribution: str) -> str:
    """The installed version of ``distribution``, or "not installed"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
