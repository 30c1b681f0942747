"""A sweep's order of lengths and its time budget: coarse lengths first, a backend that runs out
of memory still stopped at its limit in that order, and a budget that leaves cases unrun without
losing what was measured (``--resume`` runs the rest)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli.app import main
from harness.store.records import Status
from harness.store.storage import META, RESULTS, read_results
from harness.sweep.config import SweepConfig
from harness.sweep.order import length_order
from harness.sweep.runner import not_run, run_sweep
from tests.test_runner import QUICK

K = 1024


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ((K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K, 64 * K),
         [K, 4 * K, 16 * K, 64 * K, 2 * K, 8 * K, 32 * K]),
        ((64, 128, 256, 512), [64, 256, 512, 128]),  # the longest always in the first round
        ((512, 64), [64, 512]),
        ((64,), [64]),
    ],
)  # fmt: skip
def test_coarse_first_spans_the_range_first(lengths, expected):
    assert length_order(lengths, "coarse-first") == expected
    assert sorted(expected) == length_order(lengths, "ascending") == sorted(lengths)


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="coarse-first"):
        length_order((64, 128), "random")


def test_out_of_memory_stops_a_backend_in_coarse_order(tmp_path, fake_backends):
    """test-hog fails from 256 on: coarse-first runs 64, 256 (oom), 1024 (skipped), then 128
    (measured: shorter than the failure) and 512 (skipped)."""
    config = SweepConfig(lengths=(64, 128, 256, 512, 1024), backends=("test-hog",),
                         out_dir=tmp_path, passes=("fwd",), heads=2, head_dim=16, timing=QUICK,
                         order="coarse-first")  # fmt: skip
    assert [c.inputs.seq_len for c in config.cases()] == [64, 256, 1024, 128, 512]
    run_sweep(config)
    df = read_results(tmp_path)
    got = dict(zip(df["seq_len"], df["status"], strict=True))
    assert list(df["seq_len"]) == [64, 256, 1024, 128, 512]  # in the order run
    assert got == {64: Status.OK, 128: Status.OK, 256: Status.OOM, 512: Status.SKIPPED,
                   1024: Status.SKIPPED}  # fmt: skip
    assert set(df.loc[df["status"] == Status.SKIPPED, "reason"]) == {"oom at length 256"}
    assert not_run(config) == []


SWEEP = ["--device", "cpu", "--backends", "full-naive", "--lengths", "64", "128", "256",
         "--passes", "fwd", "--heads", "2", "--head-dim", "16", "--warmup", "0.01",
         "--min-repeats", "3"]  # fmt: skip


def test_a_spent_budget_keeps_what_ran_and_resume_runs_the_rest(tmp_path, capsys):
    run = tmp_path / "run"
    # each case times for 1.2 s: the first case starts at once, the budget is gone after it
    assert main([*SWEEP, "--min-time", "1.2", "--time-budget", "1", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "time budget of 1 s spent: 2 of 3 cases not run" in err
    assert f"--resume --out {run}" in err
    first = pd.read_csv(run / RESULTS)
    assert list(first["seq_len"]) == [64] and list(first["status"]) == [Status.OK]
    meta = json.loads((run / META).read_text())
    assert meta["time_budget"] == {"seconds": 1.0, "cases_not_run": 2}
    # the run's options are kept; a new budget replaces the spent one
    assert main(["--resume", "--out", str(run), "--time-budget", "600"]) == 0
    assert "time budget" not in capsys.readouterr().err
    rows = pd.read_csv(run / RESULTS)
    assert sorted(rows["seq_len"]) == [64, 128, 256] and (rows["status"] == Status.OK).all()
    assert rows.loc[0].equals(first.loc[0])  # the first case's row is untouched
    assert json.loads((run / META).read_text())["time_budget"]["cases_not_run"] == 0
