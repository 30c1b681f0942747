"""The trap of a driver script without ``if __name__ == "__main__":``.

Every case process re-imports the main module, as multiprocessing's forkserver and spawn
methods do (so that what it defines, such as a backend, can be unpickled there). A script that
starts a sweep at its top level would start it again in each case process; multiprocessing
stops that with an error deep in the process's start, which a sweep would only record as a
dead case. ``refuse_in_bootstrap`` ends such a process at once with one line, and
``require_main_guard`` has the sweeping process start one process first to see whether it
happens, so that the sweep is refused with a clear error before anything runs."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys

GUARD_EXIT = 86  # the exit code of a process that re-ran a sweep while importing the script
PROBE_TIMEOUT_S = 120.0


def _script() -> str | None:
    """The main module that a new process re-imports, or None (an interactive session,
    ``python -c``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        return spec.name
    return getattr(main, "__file__", None)


def message(script: str | None) -> str:
    return (
        f"the script {script or '(main module)'} starts a sweep when it is imported: each case "
        "runs in a new process that imports the script again, which would start the sweep "
        "again. Put the call under 'if __name__ == \"__main__\":'"
    )


def in_bootstrap() -> bool:
    """True while multiprocessing imports the main module into a new process."""
    return bool(getattr(mp.current_process(), "_inheriting", False))


def refuse_in_bootstrap() -> None:
    """End a new process that re-runs a sweep while it imports the main module, in silence:
    the sweeping process, which sees its exit code, says why (``require_main_guard``)."""
    if in_bootstrap():
        os._exit(GUARD_EXIT)


def _nothing() -> None:
    pass


def require_main_guard(ctx: mp.context.BaseContext) -> None:
    """Start one process of ``ctx`` (which the sweep then reuses, a forkserver started once);
    RuntimeError when importing the main module there does not go well."""
    script = _script()
    if script is None:
        return
    proc = ctx.Process(target=_nothing, daemon=True)
    proc.start()
    proc.join(PROBE_TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise RuntimeError(
            f"a new process did not finish importing {script} in {PROBE_TIMEOUT_S:g} s: the "
            "cases' processes import the main module again, so work at its top level belongs "
            "under 'if __name__ == \"__main__\":'"
        )
    if proc.exitcode == GUARD_EXIT:
        raise RuntimeError(message(script))
    if proc.exitcode != 0:
        raise RuntimeError(
            f"a new process could not import {script} (exit code {proc.exitcode}; its error "
            "is above): the cases' processes import the main module again"
        )
