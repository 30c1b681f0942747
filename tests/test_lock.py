"""The run folder's lock: one holder at a time, released on any exit, the holder named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.store.lock import LOCK, RunFolderBusy, locked

HOLD = """
import sys, time
from harness.store.lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_and_the_first_named(tmp_path):
    busy = rf"another sweep \(pid {os.getpid()} since "
    with locked(tmp_path), pytest.raises(RunFolderBusy, match=busy), locked(tmp_path):
        pass
    with locked(tmp_path):  # released
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunFolderBusy, match=rf"pid {holder.pid} "), locked(tmp_path):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdout.close()
    start = time.monotonic()
    with locked(tmp_path):  # the kernel released it with the process: no waiting, no cleanup
        assert f"pid {os.getpid()} " in (tmp_path / LOCK).read_text()
    assert time.monotonic() - start < 1
