"""The Python API, the console script's fast --help, and backends from outside this package
(``--import``, the ``attention_bench.backends`` entry points)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.measure import registry
from harness.store.records import Status
from harness.store.storage import read_results

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--min-time", "0.02", "--warmup", "0.01", "--min-repeats", "3", "--heads", "2",
         "--head-dim", "16"]  # fmt: skip
PLUGIN = """
from attention_impls.full import FullNaive
from harness import register


@register
class PluginFull(FullNaive):
    name = "{name}"
    description = "full attention, registered from outside the package"
"""
SCRIPT = """
import sys
from pathlib import Path

from harness import SweepConfig, TimingSettings, run_sweep


def main():
    timing = TimingSettings(warmup_s=0.01, min_time_s=0.02, min_repeats=3)
    config = SweepConfig(lengths=(64,), backends=("full-naive",), out_dir=Path(sys.argv[1]),
                         passes=("fwd",), heads=2, head_dim=16, timing=timing)
    print("run:", run_sweep(config))

"""


def python(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def plugin(tmp_path: Path, module: str, name: str) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(PLUGIN.format(name=name))
    return folder


def test_help_imports_no_torch():
    code = ("import sys; from harness.cli.app import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")  # fmt: skip
    proc = python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert "--import MODULE" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "False False"


def test_the_parsers_names_are_the_harness_names():
    from harness.cli.cli_args import DTYPE_NAMES, PASS_NAMES
    from harness.measure.inputs import DTYPES
    from harness.sweep.config import PASSES

    assert tuple(DTYPES) == DTYPE_NAMES
    assert PASSES == PASS_NAMES


def test_import_brings_a_backend_from_outside(tmp_path):
    path = plugin(tmp_path, "outside_backends", "plugin-full")
    out = tmp_path / "run"
    options = "--import outside_backends --backends plugin-full --lengths 64 --passes fwd"
    args = ["run_bench.py", *options.split(), "--device", "cpu", "--out", str(out), *QUICK]
    proc = python(*args, env={"PYTHONPATH": str(path)})
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert (row.backend, row.status) == ("plugin-full", Status.OK) and row.max_err < 1e-4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["imports"] == ["outside_backends"]
    assert "--import outside_backends" in meta["command"]
    # '--resume --out RUN' alone repeats the run's options, its --import included
    again = python("run_bench.py", "--resume", "--out", str(out), env={"PYTHONPATH": str(path)})
    assert again.returncode == 0, again.stderr


def test_an_unimportable_module_is_bad_input_in_one_line(tmp_path):
    proc = python("run_bench.py", "--import", "no_such_module_anywhere", "--lengths", "64",
                  "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--import no_such_module_anywhere: cannot import it" in proc.stderr


def test_run_sweep_writes_results_and_meta_as_the_command_line_does(tmp_path):
    from harness import SweepConfig, TimingSettings, report, run_sweep

    timing = TimingSettings(warmup_s=0.01, min_time_s=0.02, min_repeats=3)
    config = SweepConfig(lengths=(64, 128), backends=("full-sdpa",), out_dir=tmp_path / "run",
                         passes=("fwd",), heads=2, head_dim=16, timing=timing)  # fmt: skip
    run = run_sweep(config)
    df = read_results(run)
    assert list(df.status) == [Status.OK, Status.OK] and (df.max_err < 1e-4).all()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["config"]["lengths"] == [64, 128] and meta["imports"] == []
    assert meta["calibration"]["before"]["median_ms"] > 0 and "after" in meta["calibration"]
    assert "--backends full-sdpa" in meta["command"] and "before" in meta["conditions"]
    assert report(run).is_file()


def test_a_script_without_the_main_guard_is_refused(tmp_path):
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(SCRIPT + "main()\n")
    proc = python(str(unguarded), str(tmp_path / "a"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr and "if __name__ == " in proc.stderr, proc.stderr
    assert not (tmp_path / "a" / "results.csv").exists()

    guarded = tmp_path / "guarded.py"
    guarded.write_text(SCRIPT + 'if __name__ == "__main__":\n    main()\n')
    proc = python(str(guarded), str(tmp_path / "b"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_results(tmp_path / "b").status.tolist() == [Status.OK]
    assert (tmp_path / "b" / "meta.json").is_file()


def test_entry_points_register_backends_and_a_failing_one_is_named(tmp_path, monkeypatch, capsys):
    from harness.cli.app import main

    path = plugin(tmp_path, "entry_point_backends", "entry-full")
    (path / "entry_point_class.py").write_text(textwrap.dedent('''
        from attention_impls.full import FullNaive

        class EntryClass(FullNaive):
            name = "entry-class"
    '''))  # fmt: skip
    monkeypatch.syspath_prepend(str(path))
    group = registry.ENTRY_POINT_GROUP
    good = [
        importlib.metadata.EntryPoint("mod", "entry_point_backends", group),
        importlib.metadata.EntryPoint("cls", "entry_point_class:EntryClass", group),
    ]
    bad = importlib.metadata.EntryPoint("broken", "no_such_plugin_module", group)
    found = {group: good}
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found.get(group, []))
    monkeypatch.setattr(registry, "_entry_points", None)
    try:
        assert {"entry-full", "entry-class"} <= set(registry.backend_names())
        assert registry.loaded_entry_points() == [
            "mod = entry_point_backends",
            "cls = entry_point_class:EntryClass",
        ]
        found[group] = [bad]
        monkeypatch.setattr(registry, "_entry_points", None)
        with pytest.raises(registry.BackendImportError, match="entry point 'broken'"):
            registry.backend_names()
        capsys.readouterr()
        assert main(["--lengths", "64", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "entry point 'broken' (no_such_plugin_module)" in err
    finally:
        for name in ("entry-full", "entry-class"):
            registry._REGISTRY.pop(name, None)


def test_compare_writes_the_verdicts_and_the_side_by_side_report(tmp_path):
    import shutil

    from harness import CompareSettings, compare
    from harness.analyse.rules import Outcome, Verdict

    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        shutil.copytree(ROOT / "tests" / "data" / "valid-run", run)
    result = compare(a, b, settings=CompareSettings(strict=True))
    assert result.outcome == Outcome.PASSED  # the same run twice: nothing regressed
    assert set(result.table["verdict"]) <= {Verdict.SAME, Verdict.UNMEASURED}
    assert result.path == b / "compare.md" and (b / "compare.csv").is_file()
    assert (b / "vs-a" / "report.md").is_file() and (b / "vs-a" / "ratios.png").is_file()
