"""Crashes and concurrency: a sweep killed at random moments (kill -9 of the sweep, kill -9 of
its forkserver, SIGTERM) loses nothing, tears no row and leaves no process behind; after
``--resume`` every case is there exactly once. Two sweeps on one folder: one is refused.

Each sweep runs in a session of its own, so "no process of the sweep left alive" means: no
process of that session (the sweep, its forkserver, resource tracker and case processes all
inherit it).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.store import storage
from harness.store.records import Status

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = ["64", "128", "192"]
BACKENDS = ["full-naive", "full-sdpa"]
SWEEP = ["--device", "cpu", "--backends", *BACKENDS, "--lengths", *LENGTHS, "--heads", "2",
         "--head-dim", "16", "--min-time", "0.02", "--warmup", "0.01", "--min-repeats", "3",
         "--threads", "1", "--debug"]  # fmt: skip
CASES = len(LENGTHS) * len(BACKENDS) * 2
KILLS_PER_KIND = 7
SEED = 20261202


def start(out: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "run_bench.py"), *SWEEP, "--out", str(out), *extra]
    return subprocess.Popen(
        [*args, "--resume"] if resume else args, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def session_processes(sid: int) -> list[tuple[int, int, str]]:
    """Live (not zombie) processes of session ``sid``: (pid, parent pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid, _pgrp, session = stat[stat.rfind(")") + 2 :].split()[:4]
        if int(session) == sid and state != "Z":
            found.append((int(entry.name), int(ppid), cmdline))
    return found


def assert_none_left(sid: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the killed sweep still alive: {left}"


def forkserver_of(sweep: int) -> int | None:
    for pid, ppid, cmdline in session_processes(sweep):
        if ppid == sweep and "forkserver" in cmdline:
            return pid
    return None


def assert_intact(out: Path) -> pd.DataFrame:
    """No torn row; no case twice (the reader refuses duplicates)."""
    path = out / storage.RESULTS
    if not path.exists():
        return pd.DataFrame()
    text = path.read_text()
    assert not text or text.endswith("\n"), "a torn last row"
    df = storage.read_results(out)  # raises on a duplicated case
    assert not storage._split(path).torn
    return df


def assert_complete(out: Path) -> None:
    df = assert_intact(out)
    assert len(df) == CASES, df[["backend", "seq_len", "pass", "status"]]
    assert not df.duplicated(["backend", "seq_len", "pass"]).any()


def wait_for_forkserver(proc: subprocess.Popen, limit_s: float = 60.0) -> int | None:
    deadline = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < deadline:
        pid = forkserver_of(proc.pid)
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def _finish(proc: subprocess.Popen) -> None:
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err[-3000:]


def test_killed_sweeps_resume_to_every_case_exactly_once(tmp_path):
    """kill -9 of the sweep and SIGTERM at random moments (from start-up on), each followed by
    ``--resume``; then kill -9 of the forkserver at random moments within one sweep, which
    goes on (the killed case is an error row) and leaves no orphan case."""
    rng = random.Random(SEED)
    moments = {"sigkill": 0, "sigterm": 0, "forkserver": 0}
    for kind, sig in (("sigkill", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
        out = tmp_path / kind
        for attempt in range(KILLS_PER_KIND):
            proc = start(out, resume=attempt > 0)
            if kind == "sigterm":  # once the handler is installed: the sweep has begun
                wait_for_forkserver(proc)
            time.sleep(rng.uniform(0.0, 4.0))
            if proc.poll() is None:
                os.kill(proc.pid, sig)
                moments[kind] += 1
            proc.wait(timeout=120)
            err = proc.stderr.read()
            proc.stderr.close()
            if kind == "sigterm" and proc.returncode != 0:
                assert proc.returncode == 143, err
                assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
            assert_none_left(proc.pid)
            assert_intact(out)
        proc = start(out, resume=True)
        _finish(proc)
        assert_none_left(proc.pid)
        assert_complete(out)

    out = tmp_path / "forkserver"
    proc = start(out)
    while moments["forkserver"] < KILLS_PER_KIND and proc.poll() is None:
        server = wait_for_forkserver(proc, limit_s=30)
        time.sleep(rng.uniform(0.0, 1.0))
        if server is not None and proc.poll() is None:
            try:
                os.kill(server, signal.SIGKILL)
                moments["forkserver"] += 1
            except ProcessLookupError:
                pass
    _finish(proc)
    assert_none_left(proc.pid)
    assert_complete(out)
    df = storage.read_results(out)
    killed = df[df.status == Status.ERROR]
    why = "forkserver was killed|could not start the case's process"
    assert killed.reason.str.contains(why).all(), killed.reason
    print(f"kills: {moments}; error rows of killed forkservers: {len(killed)}")  # with -s
    assert sum(moments.values()) >= 20, moments


def test_a_killed_case_respects_its_timeout_when_its_forkserver_died(tmp_path):
    """With the forkserver killed mid-case, the case dies with it (the parent-death signal), and
    the sweep records it at once rather than waiting for a case that nothing would stop."""
    out = tmp_path / "run"
    proc = start(out, "--min-time", "3", "--case-timeout", "60")
    server = wait_for_forkserver(proc)
    assert server is not None
    deadline = time.monotonic() + 60
    while not any(ppid == server for _, ppid, _ in session_processes(proc.pid)):
        assert time.monotonic() < deadline, "no case process started"
        time.sleep(0.05)
    time.sleep(0.5)  # the case is being timed
    killed_at = time.monotonic()
    os.kill(server, signal.SIGKILL)
    deadline = killed_at + 20
    while not (out / storage.RESULTS).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / storage.RESULTS).exists(), "the case was not recorded within 20 s"
    assert time.monotonic() - killed_at < 20
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert_none_left(proc.pid)
    first = storage.read_results(out).iloc[0]
    assert first.status == Status.ERROR and "forkserver was killed" in first.reason


def test_two_sweeps_on_one_folder_one_is_refused(tmp_path):
    out = tmp_path / "run"
    first = start(out, "--min-time", "0.5")
    assert wait_for_forkserver(first) is not None  # it holds the lock and is sweeping
    second, also = start(out), start(out, resume=True)  # --resume does not get in either
    for proc in (second, also):
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 2, err
        assert err.count("\n") == 1 and "being written by another sweep (pid" in err, err
    assert first.poll() is None, "the first sweep ended before the others were refused"
    _finish(first)
    assert first.returncode == 0
    assert_complete(out)


@pytest.mark.parametrize("resume", [False, True])
def test_two_sweeps_started_together_one_is_refused(tmp_path, resume):
    out = tmp_path / "run"
    if resume:  # a run interrupted after its first case, resumed twice at once
        proc = start(out, "--lengths", "64", "--backends", "full-naive", "--passes", "fwd")
        _finish(proc)
        text = (out / storage.RESULTS).read_text().splitlines(keepends=True)
        (out / storage.RESULTS).write_text("".join(text[:1]))
        both = [start(out, "--lengths", "64", "--backends", "full-naive", "--passes", "fwd",
                      resume=True) for _ in range(2)]  # fmt: skip
    else:
        both = [start(out) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in both]
    codes = sorted(p.returncode for p in both)
    assert codes == [0, 2], errs
    assert any("another sweep" in e or "already holds results" in e for e in errs), errs
    df = assert_intact(out)
    assert not df.duplicated(["backend", "seq_len", "pass"]).any()


def test_a_full_disk_ends_the_sweep_cleanly_with_what_was_written(tmp_path):
    """A file size limit (what a full disk looks like to a writer: a short write, then none)
    lets the first rows in: the sweep stops at the first row that does not fit, with one line
    and exit code 5, the file holds whole rows only, and --resume completes it later."""
    out = tmp_path / "run"
    limit = 4096  # meta.json (about 2 KiB) fits; the header and about 8 of the 12 rows do

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [sys.executable, str(ROOT / "run_bench.py"), *SWEEP, "--out", str(out)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_disk)  # fmt: skip
    assert proc.returncode == 5, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_bench.py: error: cannot write") and "intact" in last, last
    assert "Traceback" not in proc.stderr
    df = assert_intact(out)
    assert 0 < len(df) < CASES
    proc = start(out, resume=True)
    _finish(proc)
    assert_complete(out)
