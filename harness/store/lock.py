"""One writer per run folder: a sweep holds an exclusive lock on ``RUN/.lock`` for its life.

The lock is ``flock``'s, so the kernel releases it on any exit, kill -9 included: a crashed
sweep never leaves a stale lock behind, and ``--resume`` can start at once. The file holds the
holder's PID and start time, which the refusal names; it is left in place (removing it would
let a third sweep lock a new file while a second holds the old one). Case processes are forked
by a server that was started with only the file descriptors it needs, so they never hold the
lock: it goes with the sweep.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK = ".lock"


class RunFolderBusy(RuntimeError):
    """Another sweep is writing into the folder."""


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock, or raise ``RunFolderBusy`` naming the sweep that holds it."""
    path = Path(out_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusy(
                f"{out_dir} is being written by another sweep ({holder}): wait for it to "
                "finish, or use another --out"
            ) from None
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {stamp}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
