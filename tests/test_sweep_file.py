"""``--config FILE``: a sweep's options from TOML, checked as the flags are, the command line
winning; a run's ``sweep.toml`` replays its sweep."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from harness.cli.app import main
from harness.cli.cli import build_config, parser_for
from harness.sweep import meta, resolved
from harness.sweep.config import SweepConfig

ISSUE_GRID = """
lengths = [1024, 2048, 4096]
backends = ["longformer", "full-sdpa", "bigbird"]
modes = ["fwd", "bwd", "fwdbwd"]
head_dim = [64, 128]
causal = [true, false]
window = [128, 256]
device = "cpu"
min_time = 0.05
out = "{out}"
"""


def config_of(*argv: str) -> SweepConfig:
    return build_config(parser_for(list(argv)).parse_args(list(argv)))


def toml(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("{out}", str(tmp_path / "run")))
    return path


def test_the_issues_grid_from_a_file(tmp_path):
    c = config_of("--config", str(toml(tmp_path, ISSUE_GRID)))
    assert c.lengths == (1024, 2048, 4096) and c.passes == ("fwd", "bwd", "fwdbwd")
    assert c.backends == ("longformer", "full-sdpa", "bigbird")
    assert c.head_dim == (64, 128) and c.causal == (True, False)
    assert c.param_grid == (("window", (128, 256)),) and c.timing.min_time_s == 0.05
    assert c.out_dir == tmp_path / "run" and c.dtype == (torch.float32,)
    # 3 lengths x 2 head_dims x 2 causal x (2 longformer + sdpa + bigbird) x 3 modes
    assert len(c.cases()) == 3 * 2 * 2 * 4 * 3


def test_the_command_line_wins_over_the_file(tmp_path):
    path = toml(tmp_path, ISSUE_GRID)
    c = config_of("--config", str(path), "--lengths", "512", "--window", "64", "--modes", "fwd",
                  "--block-size", "32", "--out", str(tmp_path / "other"))  # fmt: skip
    assert c.lengths == (512,) and c.passes == ("fwd",) and c.head_dim == (64, 128)
    assert dict(c.param_grid) == {"window": (64,), "block_size": (32,)}
    assert c.out_dir == tmp_path / "other"


def test_scalars_switches_and_aliases(tmp_path):
    path = toml(tmp_path, 'lengths = 256\nbackends = "reformer"\npasses = "fwd"\n'
                'no_shared_qk = true\nhashes = [1, 2]\nseed = 3\nprocesses = 2\n'
                'time_tolerance = "20%"\ndevice = "cpu"\nout = "{out}"\n')  # fmt: skip
    c = config_of("--config", str(path))
    assert c.lengths == (256,) and c.backends == ("reformer",) and c.passes == ("fwd",)
    assert dict(c.param_grid) == {"shared_qk": (False,), "n_hashes": (1, 2)}
    assert c.seed == 3 and c.processes == 2


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("lengthz = [64]", "unknown key 'lengthz'"),
        ('lengths = ["64"]', "lengths: expected a number, not a string ('64')"),
        ("lengths = [0]", "lengths: must be positive"),
        ("lengths = []", "lengths: an empty list"),
        ("lengths = [1.5]", "lengths: not an integer: '1.5'"),
        ("seed = [1, 2]", "seed: expected one value, not a list"),
        ("window = true", "window: expected a number, not a bool"),
        ('causal = ["maybe"]', "causal: not on or off: 'maybe'"),
        ("causal = [3]", "causal: expected true or false"),
        ("no_shared_qk = 1", "no_shared_qk: expected true or false"),
        ("backends = [1]", "backends: expected a string"),
        ('modes = ["sideways"]', "modes: 'sideways' is not one of fwd"),
        ('modes = ["fwd"]\npasses = ["fwd"]', "passes and modes set the same option"),
        ("[timing]\nmin_time = 1", "unknown key 'timing'"),
        ("config = 'other.toml'", "unknown key 'config'"),
        ("import = [1]", "import: expected a module name"),
        ("lengths = [64", "not TOML"),
        ("heads = [4, 6]\nkv_heads = [4]", "--kv-heads 4 does not divide --heads 6"),
    ],
)
def test_bad_file_is_one_line_naming_the_key_and_the_file(tmp_path, capsys, text, says):
    path = toml(tmp_path, text + '\nbackends = ["full-naive"]\n' if "backends" not in text
                else text)  # fmt: skip
    assert main(["--config", str(path), "--device", "cpu", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    if "does not divide" not in says:  # the grid's checks name the flag; the file's, the file
        assert str(path) in err


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml: cannot read it" in err and err.count("\n") == 1


def test_the_writer_writes_what_tomllib_reads():
    table = {"a": "quote \" backslash \\ tab \t newline \n del \x7f nul \x00 é 😀",
             "b": [1, 2.5, 1e-05, 3e20], "c": [True, False], "d": -3, "e": ["x", "y"],
             "f": 0.1}  # fmt: skip
    text = resolved.dumps(table, header="a header\nof two lines")
    assert text.startswith("# a header\n# of two lines\n")
    assert tomllib.loads(text) == table


FULL_GRID = ["--lengths", "64", "96", "--backends", "longformer", "full-naive", "reformer",
             "bigbird", "--window", "4", "8", "--causal", "on", "off", "--heads", "2", "4",
             "--kv-heads", "2", "--head-dim", "8", "--q-len", "16", "--documents", "1", "2",
             "--modes", "fwd", "fwd-grad", "--no-shared-qk", "--global-tokens", "0", "3",
             "--block-size", "8", "16", "--hashes", "1", "2", "--seed", "5", "--dtype",
             "float64", "float32", "--min-time", "0.05", "--warmup", "0.01", "--threads", "1",
             "--order", "coarse-first", "--time-budget", "100", "--device", "cpu"]  # fmt: skip


def test_a_runs_sweep_toml_replays_its_sweep(tmp_path):
    original = config_of(*FULL_GRID, "--out", str(tmp_path / "run"))
    path = resolved.write(original)
    assert path == tmp_path / "run" / "sweep.toml"
    replay = config_of("--config", str(path), "--out", str(tmp_path / "new"))
    assert [c.key() for c in replay.cases()] == [c.key() for c in original.cases()]
    same = ("timing", "processes", "case_timeout_s", "check_rows", "threads", "order",
            "time_budget_s", "seed", "param_grid", "causal", "dtype")  # fmt: skip
    for name in same:
        assert getattr(replay, name) == getattr(original, name), name
    assert replay.out_dir == tmp_path / "new"


def test_a_command_with_a_config_file_is_recorded_whole(tmp_path):
    """--resume and --compare-to repeat meta.json's command: not the file, which may change."""
    path = toml(tmp_path, ISSUE_GRID)
    c = config_of("--config", str(path))
    given = ["run_bench.py", "--config", str(path), "--modes", "fwd"]
    recorded = meta.recordable(c, given)
    assert "--config" not in recorded and recorded[-2:] == ["--out", str(c.out_dir)]
    again = config_of(*recorded[1:])
    assert [k.key() for k in again.cases()] == [k.key() for k in c.cases()]
    plain = ["run_bench.py", "--lengths", "64"]
    assert meta.recordable(c, plain) == plain
