"""The command line sweeps a grid on every axis of the problem and every backend parameter;
contradictory grids are refused in one line; a run with a grid records a command line that
repeats it, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.cli.app import main
from harness.cli.cli import build_config, parser_for
from harness.cli.recorded import command_line, with_recorded_options
from harness.store import storage
from harness.store.records import FORMAT_VERSION, Status
from harness.sweep.config import MODES, SweepConfig


def config_of(tmp_path: Path, *argv: str) -> SweepConfig:
    argv = ("--device", "cpu", "--out", str(tmp_path / "run"), *argv)
    return build_config(parser_for(list(argv)).parse_args(list(argv)))


def keys(config: SweepConfig) -> list[tuple]:
    return [case.key() for case in config.cases()]


def test_every_axis_takes_several_values_duplicates_dropped(tmp_path):
    c = config_of(tmp_path, "--backends", "full-naive", "--lengths", "64", "128", "64",
                  "--batch", "1", "2", "1",
                  "--heads", "4", "8", "--kv-heads", "4", "2", "--head-dim", "16", "32",
                  "--q-len", "1", "64", "--documents", "1", "3", "--dtype", "float32",
                  "float64", "auto")  # fmt: skip
    assert c.lengths == (64, 128) and c.batch == (1, 2) and c.heads == (4, 8)
    assert c.kv_heads == (4, 2) and c.head_dim == (16, 32) and c.q_len == (1, 64)
    assert c.documents == (1, 3)
    assert c.dtype == (torch.float32, torch.float64)  # auto is float32 on the CPU
    assert len(c.shapes()) == 2 * 2 * 2 * 2 * 2 * 2 * 2


def test_left_out_axes_are_one_value_each(tmp_path):
    c = config_of(tmp_path, "--lengths", "64", "--backends", "full-naive")
    assert (c.batch, c.heads, c.kv_heads, c.head_dim) == ((1,), (4,), (None,), (64,))
    assert (c.q_len, c.documents, c.causal) == ((None,), (1,), (False,))
    assert c.passes == ("fwd", "fwdbwd")


@pytest.mark.parametrize(
    ("words", "causal"),
    [([], (True,)), (["on", "off"], (True, False)), (["off"], (False,)),
     (["yes", "no", "1", "0", "true", "FALSE"], (True, False))],
)  # fmt: skip
def test_causal_is_an_axis_of_on_and_off(tmp_path, words, causal):
    c = config_of(tmp_path, "--lengths", "64", "--backends", "full-naive", "bigbird",
                  "--block-size", "8", "--causal", *words)  # fmt: skip
    assert c.causal == causal
    full = [case for case in c.cases() if case.backend.name == "full-naive"]
    assert {(case.inputs.causal, case.backend.params.causal) for case in full} == {
        (x, x) for x in causal
    }
    # bigbird has no causal variant: its causal cases are there, and refused with a reason
    bigbird = [case for case in c.cases() if case.backend.name == "bigbird" and case.inputs.causal]
    assert len(bigbird) == 2 * causal.count(True)
    assert all("no causal variant" in " ".join(case.backend.not_supported_reasons(case.inputs))
               for case in bigbird)  # fmt: skip


def test_modes_and_their_old_name(tmp_path):
    one = ("--lengths", "64", "--backends", "full-naive")
    assert config_of(tmp_path, *one, "--modes", *MODES).passes == MODES
    assert config_of(tmp_path, *one, "--passes", "bwd", "fwd").passes == ("bwd", "fwd")


def test_a_backend_parameter_with_several_values_is_a_grid(tmp_path):
    c = config_of(tmp_path, "--lengths", "256", "--backends", "longformer", "bigbird",
                  "full-sdpa", "--window", "16", "32", "16", "--block-size", "16", "32",
                  "--global-tokens", "0", "5", "10", "--modes", "fwd")  # fmt: skip
    assert dict(c.param_grid) == {"window": (16, 32), "block_size": (16, 32),
                                  "global_tokens": ((0, 5, 10),)}  # fmt: skip
    labels = [case.backend.params for case in c.cases()]
    windows = {p.window for p in labels if hasattr(p, "window")}
    assert windows == {16, 32} and all(p.global_tokens == (0, 5, 10)
                                       for p in labels if hasattr(p, "global_tokens"))  # fmt: skip
    assert len(c.cases()) == 2 + 2 + 1  # longformer x2, bigbird x2, full-sdpa


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--heads", "4", "6", "--kv-heads", "4"], "--kv-heads 4 does not divide --heads 6"),
        (["--heads", "4", "--kv-heads", "8"], "--kv-heads 8 does not divide --heads 4"),
        (["--q-len", "65"], "--q-len 65 is more than length 64"),
        (["--documents", "100"], "--documents 100 do not fit in length 64"),
        (["--causal", "sometimes"], "not on or off: 'sometimes'"),
        (["--kv-heads", "0"], "must be positive"),
        (["--q-len", "x"], "not an integer"),
        (["--modes", "sideways"], "invalid choice"),
        (["--dtype", "float32", "float8"], "invalid choice"),
        (["--backends", "bigbird", "--causal"], "none of the selected backends has a causal"),
        (["--backends", "longformer", "--window", "8", "64"], "window=64"),
        (["--backends", "full-sdpa", "--window", "8", "16"], "applies to none"),
        (["--batch", "1", "65535", "--heads", "65535", "--lengths", "64", "4096"], "GiB"),
    ],
)
def test_a_contradictory_grid_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    assert main(["--lengths", "64", "--device", "cpu", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_the_recorded_command_line_repeats_the_grid(tmp_path):
    original = config_of(tmp_path, "--lengths", "64", "96", "--backends", "longformer",
                         "full-naive", "reformer", "--window", "4", "8", "--causal", "on", "off",
                         "--heads", "2", "4", "--kv-heads", "2", "--head-dim", "8",
                         "--q-len", "16", "--documents", "1", "2", "--modes", "fwd", "bwd",
                         "--no-shared-qk", "--global-tokens", "0", "3", "--seed", "5",
                         "--dtype", "float64", "--min-time", "0.05")  # fmt: skip
    line = command_line(original)
    argv = line[1:]
    again = build_config(parser_for(argv).parse_args(argv))
    assert keys(again) == keys(original)
    # what --resume and --compare-to do with it: the recorded options, what is given winning
    args = with_recorded_options(["--modes", "fwd"], "test", " ".join(line))
    assert keys(build_config(args)) == [k for k in keys(original) if "bwd" not in k]


QUICK = ["--min-time", "0.01", "--warmup", "0.01", "--min-repeats", "3", "--heads", "2",
         "--head-dim", "8", "--device", "cpu", "--modes", "fwd"]  # fmt: skip


def test_a_grid_sweeps_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--lengths", "32", "--backends", "longformer", "full-naive", "--window", "2", "4",
            "--causal", "on", "off", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    df = pd.read_csv(out / "results.csv")
    assert len(df) == (2 + 1) * 2  # longformer's two windows and full-naive, causal or not
    assert set(df.causal) == {True, False} and (df.status == Status.OK).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["params"] == {"window": [2, 4]}
    assert meta["config"]["causal"] == [True, False]
    assert (out / "sweep.toml").is_file()
    # cut short: '--resume --out RUN' alone repeats the grid and runs the missing cases only
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-2]))
    assert main(["--resume", "--out", str(out)]) == 0, capsys.readouterr().err
    again = pd.read_csv(out / "results.csv")
    key = ["label", "causal"]
    assert len(again) == len(df) and not again.duplicated(key).any()
    # resuming with another grid is refused, naming what differs
    capsys.readouterr()
    assert main(["--resume", "--out", str(out), "--window", "2", "8"]) == 2
    err = capsys.readouterr().err
    assert "backend parameter window 2 8 (the run has 2 4)" in err and err.count("\n") == 1
    assert main(["--resume", "--out", str(out), "--causal"]) == 2
    assert "--causal on (the run has on off)" in capsys.readouterr().err


def test_the_input_distribution_is_an_axis(tmp_path):
    c = config_of(tmp_path, "--lengths", "64", "--backends", "full-naive", "--inputs",
                  "structured", "gaussian", "structured")  # fmt: skip
    assert c.distribution == ("structured", "gaussian")
    assert [case.inputs.distribution for case in c.cases()] == ["structured"] * 2 + ["gaussian"] * 2
    assert config_of(tmp_path, "--lengths", "64", "--backends", "full-naive").distribution == (
        "gaussian",
    )
    toml = tmp_path / "s.toml"
    toml.write_text('lengths = [64]\nbackends = ["full-naive"]\ninputs = "structured"\n')
    assert config_of(tmp_path, "--config", str(toml)).distribution == ("structured",)
    toml.write_text('lengths = [64]\ninputs = ["gaussian", 3]\n')
    assert main(["--config", str(toml), "--device", "cpu", "--out", str(tmp_path / "r")]) == 2
    assert main(["--lengths", "64", "--inputs", "uniform", "--out", str(tmp_path / "r")]) == 2


def test_a_sweep_on_two_input_distributions_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--lengths", "48", "--backends", "longformer", "full-naive", "--window", "4",
            "--inputs", "gaussian", "structured", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    summary = capsys.readouterr().out
    assert "gaussian inputs" in summary and "structured inputs" in summary
    assert max(len(line) for line in summary.splitlines() if str(out) not in line) <= 120
    df = pd.read_csv(out / "results.csv")
    assert df["inputs"].tolist() == ["gaussian"] * 2 + ["structured"] * 2
    assert set(df["implementation"]) == {"ours"} and (df.status == Status.OK).all()
    err = df.set_index(["backend", "inputs"])["err_vs_full"]
    assert err["full-naive"].max() < 1e-5  # exact on either
    assert err["longformer", "structured"] != err["longformer", "gaussian"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["config"]["distribution"] == ["gaussian", "structured"]
    assert "AR(1)" in meta["input_distributions"]["structured"]
    assert 'inputs = ["gaussian", "structured"]' in (out / "sweep.toml").read_text()
    replay = config_of(tmp_path, "--config", str(out / "sweep.toml"))
    assert {c.key() for c in replay.cases()} == storage.finished_keys(storage.read_results(out))
    # cut short, then resumed: the missing structured case runs again, nothing twice
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]))
    assert main(["--resume", "--out", str(out)]) == 0, capsys.readouterr().err
    again = pd.read_csv(out / "results.csv")
    assert len(again) == 4 and not again.duplicated(["label", "inputs"]).any()
    capsys.readouterr()
    assert main(["--resume", "--out", str(out), "--inputs", "structured"]) == 2
    assert "--inputs structured (the run has gaussian structured)" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| family " in md and "**structured**: q, k and v drawn from the seed" in md
    assert main(["export", str(out)]) == 0
    cases = json.loads((out / "results.json").read_text())
    assert sorted(c["inputs"] for c in cases) == ["gaussian"] * 2 + ["structured"] * 2
