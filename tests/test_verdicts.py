"""``compare`` and ``baseline`` on the command line: exit codes, files, bad input."""

from __future__ import annotations

import json

import pandas as pd

from harness.cli.app import main
from tests.synthetic_runs import LONGFORMER, SDPA, write_run

SERIES = (SDPA, LONGFORMER)


def with_reference(run, median_ms):
    meta = json.loads((run / "meta.json").read_text())
    meta["calibration"] = {"before": {"median_ms": median_ms}, "after": {"median_ms": median_ms}}
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def test_unchanged_passes_and_a_slowdown_fails(tmp_path, capsys):
    base = write_run(tmp_path / "base", series=SERIES)
    same = write_run(tmp_path / "same", series=SERIES)
    slow = write_run(tmp_path / "slow", series=SERIES, scale=1.25)
    assert main(["compare", str(base), str(same)]) == 0
    table = pd.read_csv(same / "compare.csv")
    assert set(table["verdict"]) == {"same"} and len(table) == 24
    # one process per case: a difference is no verdict, the exit code says "undecided"
    assert main(["compare", str(base), str(slow)]) == 3
    err = capsys.readouterr().err
    assert "fewer than 3 processes" in err and "exit code 3" in err
    assert main(["compare", str(base), str(slow), "--allow-inconclusive"]) == 0
    capsys.readouterr()
    # judged on the statistics alone
    assert main(["compare", str(base), str(slow), "--strict"]) == 1
    assert "regression" in capsys.readouterr().err
    md = (slow / "compare.md").read_text()
    assert "24 regressed" in md and "| regressed |" in md
    # a wider tolerance lets the same slowdown through
    assert main(["compare", str(base), str(slow), "--time-tolerance", "30%", "--strict"]) == 0


def test_normalised_mode_forgives_a_slower_machine(tmp_path):
    base = with_reference(write_run(tmp_path / "base", series=SERIES), 10.0)
    slow_day = with_reference(write_run(tmp_path / "new", series=SERIES, scale=1.5), 15.0)
    assert main(["compare", str(base), str(slow_day), "--strict"]) == 1
    assert main(["compare", str(base), str(slow_day), "--normalise", "--strict",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "normalised by the calibration" in (tmp_path / "compare.md").read_text()


def test_bad_input(tmp_path, capsys):
    base = write_run(tmp_path / "base", series=(SDPA,), passes=("fwd",))
    other = write_run(tmp_path / "other", series=(LONGFORMER,), passes=("fwd",))
    for argv, says in (
        (["compare", str(base)], "required"),
        (["compare", str(base), str(tmp_path / "nope")], "no such run folder"),
        (["compare", str(base), str(other)], "no case in common"),
        (["compare", str(base), str(base), "--normalise"], "no calibration wall time"),
        (["compare", str(base), str(base), "--metric", "cpu"], "no CPU time was recorded"),
        (["compare", str(base), str(base), "--metric", "instructions"], "invalid choice"),
        (["compare", str(base), str(base), "--time-tolerance", "-5%"], "time-tolerance"),
        (["baseline", "save", str(base), "bad/name"], "baseline name"),
        (["baseline", "save", str(base), "name-with-newline\n"], "baseline name"),
        (["baseline", "save", str(base), "x" * 300], "up to 100 letters"),
        (["baseline", "load"], "invalid choice"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, (argv, err)


def test_baseline_save_then_check_against(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    quick = ["--lengths", "64", "--backends", "full-sdpa", "--passes", "fwd", "--heads", "2",
             "--head-dim", "16", "--min-time", "0.02", "--warmup", "0.01"]  # fmt: skip
    assert main([*quick, "--out", str(first)]) == 0
    assert main(["baseline", "save", str(first), "cpu-quick"]) == 0
    saved = tmp_path / "results" / "baselines" / "cpu-quick"
    assert {p.name for p in saved.iterdir()} == {"results.csv", "meta.json"}
    assert main(["baseline", "save", str(first), "cpu-quick"]) == 2  # exists: --replace
    assert "--replace" in capsys.readouterr().err
    assert main(["baseline", "save", str(first), "cpu-quick", "--replace"]) == 0
    assert main(["baseline", "save", "results/baselines/cpu-quick", "cpu-quick", "--replace"]) == 2
    assert "is baseline 'cpu-quick' already" in capsys.readouterr().err
    # one step, as a CI job does it: the baseline's own sweep, its options unless given here;
    # a 1000x tolerance so that machine noise cannot fail it (one process per case: a
    # difference is inconclusive, which is allowed here)
    code = main(["--out", str(tmp_path / "second"), "--compare-to", "cpu-quick",
                 "--normalise", "--time-tolerance", "1000", "--allow-inconclusive",
                 "--remeasure", "0"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "second" / "compare.csv")
    assert table["verdict"].isin(["same", "faster", "slower", "inconclusive"]).all()
    assert len(table) == 1
    config = json.loads((tmp_path / "second" / "meta.json").read_text())["config"]
    assert config == json.loads((first / "meta.json").read_text())["config"]
    # what is given wins: another shape shares no case with the baseline
    assert main(["--out", str(tmp_path / "third"), "--compare-to", "cpu-quick",
                 "--heads", "1"]) == 2  # fmt: skip
    assert "no case in common" in capsys.readouterr().err
    assert main([*quick, "--out", str(tmp_path / "x"), "--compare-to", "nope"]) == 2
    assert "no baseline 'nope'" in capsys.readouterr().err


def test_compare_to_measures_undecided_cases_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.cli.app._quiet", lambda device: True)  # busy or not: measure again
    first = tmp_path / "first"
    assert main(["--lengths", "64", "--backends", "full-sdpa", "--passes", "fwd", "--heads", "2",
                 "--head-dim", "16", "--min-time", "0.02", "--warmup", "0.01",
                 "--out", str(first)]) == 0  # fmt: skip
    # a baseline 10000x faster than this machine can be: the case regresses every round
    rows = pd.read_csv(first / "results.csv", keep_default_na=False)
    for column in ("time_median_ms", "time_samples_ms", "process_medians_ms"):
        rows[column] = rows[column].map(
            lambda t: " ".join(f"{float(x) / 1e4:.6g}" for x in str(t).split())
        )
    rows.to_csv(first / "results.csv", index=False)
    assert main(["baseline", "save", str(first), "tiny"]) == 0
    second = tmp_path / "second"
    assert main(["--out", str(second), "--compare-to", "tiny", "--strict"]) == 1
    rows = pd.read_csv(second / "results.csv", keep_default_na=False)
    assert list(rows["round"]) == [1, 2, 3]  # measured again twice, the last row stands
    assert [len(str(p).split()) for p in rows["process_medians_ms"]] == [1, 2, 2]
    err = capsys.readouterr().err
    assert "measuring again, round 1 of 2, 1 cases with 2 processes" in err
    assert "round 2 of 2" in err and "deprecated" not in err
    assert main(["--out", str(tmp_path / "third"), "--check-against", "tiny", "--strict",
                 "--rechecks", "0"]) == 1  # fmt: skip
    err = capsys.readouterr().err  # the old names still work, and say what replaced them
    assert "--check-against is deprecated, use --compare-to" in err
    assert "--rechecks is deprecated, use --remeasure" in err
    assert len(pd.read_csv(tmp_path / "third" / "results.csv")) == 1


def test_not_measured_again_while_the_machine_stays_busy(monkeypatch, capsys):
    from harness.cli import app
    from harness.sweep import loadgen

    monkeypatch.setattr(app, "QUIET_WAIT_S", 0)
    with loadgen.busy(seconds=30):
        assert not app._quiet("cpu")
    assert "the machine stayed busy" in capsys.readouterr().err


def test_check_against_a_baseline_whose_command_does_not_parse(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path / "run", series=(SDPA,), passes=("fwd",))
    meta = json.loads((run / "meta.json").read_text())
    meta["command"] = "run_bench.py --lengths 1024 --an-option-of-another-version"
    (run / "meta.json").write_text(json.dumps(meta))
    assert main(["baseline", "save", str(run), "odd"]) == 0
    assert main(["--out", str(tmp_path / "x"), "--compare-to", "odd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "baseline 'odd': its command line does not parse" in err


def test_a_baseline_command_that_is_missing_or_asks_for_help_is_refused(tmp_path, monkeypatch,
                                                                         capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path / "run", series=(SDPA,), passes=("fwd",))
    for name, command in (("helpful", "run_bench.py --lengths 64 -h"), ("blank", None)):
        meta = json.loads((run / "meta.json").read_text())
        meta["command"] = command
        (run / "meta.json").write_text(json.dumps(meta))
        assert main(["baseline", "save", str(run), name]) == 0
        capsys.readouterr()
        # not help and exit 0 having measured nothing; not reading standard input
        assert main(["--out", str(tmp_path / name), "--compare-to", name]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"baseline {name!r}" in err, err


def test_a_crash_is_an_internal_error_not_a_verdict(monkeypatch, capsys):
    def boom(argv):
        raise RuntimeError("something the harness did not expect\nsecond line")

    monkeypatch.setattr("harness.cli.app.run", boom)
    assert main(["compare", "a", "b"]) == 4
    err = capsys.readouterr().err
    assert err == ("run_bench.py: internal error: RuntimeError: something the harness did not "
                   "expect (--debug shows where)\n")  # fmt: skip
    assert main(["compare", "a", "b", "--debug"]) == 4
    assert "Traceback" in capsys.readouterr().err
