"""The machine's conditions around a timed block, and the load generator that makes them bad."""

from __future__ import annotations

import os
import time

import pytest

from harness.measure import conditions
from harness.sweep import loadgen


def test_other_processes_share_is_the_machine_less_our_own(monkeypatch):
    # (busy, steal, total) ticks of all CPUs, then our own CPU ticks, before and after
    machine = iter([(1000, 10, 5000), (1300, 30, 5400)])
    own = iter([50.0, 150.0])
    monkeypatch.setattr(conditions, "_cpu_ticks", lambda: next(machine))
    monkeypatch.setattr(conditions, "_own_ticks", lambda: next(own))
    with conditions.Window() as w:
        pass
    c = w.conditions
    assert c.other_cpu == pytest.approx((300 - 100) / 400)  # our 100 ticks are not "other"
    assert c.steal == pytest.approx(20 / 400)
    assert c.gpu_clock_mhz is None and c.gpu_temp_c is None  # a CPU run


def test_unreadable_counters_give_none(monkeypatch):
    monkeypatch.setattr(conditions, "_cpu_ticks", lambda: None)
    with conditions.Window() as w:
        pass
    assert w.conditions.other_cpu is None and w.conditions.steal is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_the_load_generator_keeps_the_cpus_busy_and_stops():
    with loadgen.busy(workers=2 * (os.cpu_count() or 1), seconds=30) as pids:
        time.sleep(0.3)  # the workers import numpy
        with conditions.Window() as w:
            time.sleep(1.0)
    assert w.conditions.other_cpu > 0.5, w.conditions
    assert w.conditions.load_avg is not None
    for pid in pids:  # stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    started = time.monotonic()
    pids = loadgen.start(1, seconds=0.5)  # stops by itself
    for pid in pids:
        os.waitpid(pid, 0)
    assert time.monotonic() - started < 10


def test_load_generator_refuses_bad_arguments(capsys, monkeypatch):
    assert loadgen.main(["--workers", "0"]) == 2
    assert loadgen.main(["--seconds", "inf"]) == 2
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # as if not installed
    assert loadgen.main(["--seconds", "1"]) == 2  # not workers that exit at once, loading nothing
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "numpy is not installed" in err


def test_every_condition_has_its_column_in_the_results():
    # measured here, stored there: the two lists are written twice on purpose (the store does
    # not import the measuring side), so they must not drift apart
    from dataclasses import fields

    from harness.store.records import COLUMNS

    assert {f.name for f in fields(conditions.Conditions)} <= set(COLUMNS)
