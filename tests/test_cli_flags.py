"""The backend-parameter flags are generated from the families' declarations (``param``): read
from source for ``--help`` and from the registry for a sweep, the same flags either way; an
outside backend brings its own."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import flags
from harness.measure.params import fields_of, merged, param
from harness.measure.registry import backend_names, get_backend_class

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--min-time", "0.02", "--warmup", "0.01", "--min-repeats", "3", "--heads", "2",
         "--head-dim", "16", "--device", "cpu", "--passes", "fwd"]  # fmt: skip
PLUGIN = """
from dataclasses import dataclass

from attention_impls.full import FullNaive
from harness import register
from harness.measure.params import param


@dataclass(frozen=True)
class KnobParams:
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)
    knob: int = param(3, "--knob", "how far the plugin turns", low=1)


@register
class Knobbed(FullNaive):
    name = "knobbed"
    family = "knobbed"
    Params = KnobParams
"""


def builtin_classes() -> list[type]:
    classes = (get_backend_class(n) for n in backend_names())
    return list(dict.fromkeys(c for c in classes if c.__module__.startswith("attention_impls.")))


def test_help_reads_the_flags_a_sweep_parses_with():
    from_registry = merged(f for c in builtin_classes() for f in fields_of(c.Params, c.family))
    assert flags.declared_flags() == from_registry
    assert {f.flag for f in from_registry} >= {"--window", "--causal", "--block-size", "--hashes"}


@pytest.mark.parametrize("cls", builtin_classes(), ids=lambda c: c.name)
def test_every_parameter_of_a_builtin_backend_has_a_flag(cls):
    declared = {f.dest for f in fields_of(cls.Params, cls.family)}
    assert declared == {f.name for f in dataclasses.fields(cls.Params)}


def test_a_flag_declared_two_ways_is_refused():
    @dataclass(frozen=True)
    class A:
        window: int = param(8, "--window", "a window", low=1)

    @dataclass(frozen=True)
    class B:
        window: int | None = param(None, "--window", "another window")

    with pytest.raises(ValueError, match="--window is declared one way in a"):
        merged([*fields_of(A, "a"), *fields_of(B, "b")])


def test_defaults_differ_by_family_and_the_help_says_each():
    @dataclass(frozen=True)
    class A:
        window: int = param(8, "--window", "a window", low=1)

    @dataclass(frozen=True)
    class B:
        window: int = param(16, "--window", "a window", low=1)

    (flag,) = merged([*fields_of(A, "a"), *fields_of(B, "b")])
    assert flag.help == "a: a window (8); b: a window (16)"


def run(*args: str, plugin: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PYTHONPATH": str(plugin)} if plugin else {})}
    return subprocess.run([sys.executable, "run_bench.py", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)  # fmt: skip


def test_an_outside_backend_brings_its_own_flag(tmp_path):
    (tmp_path / "knob_backends.py").write_text(PLUGIN)
    shown = run("--import", "knob_backends", "--help", plugin=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "knobbed: how far the plugin turns (3)" in " ".join(shown.stdout.split())
    out = tmp_path / "run"
    done = run("--import", "knob_backends", "--backends", "knobbed", "full-naive", "--knob", "5",
               "--lengths", "64", "--out", str(out), *QUICK, plugin=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(out / "results.csv")
    knobbed = df[df.backend == "knobbed"].iloc[0]
    assert json.loads(knobbed.params) == {"causal": False, "knob": 5}
    assert "--knob 5" in json.loads((out / "meta.json").read_text())["command"]
    # without the module there is no such flag; below its bound it is refused in one line
    unknown = run("--backends", "full-naive", "--knob", "5", "--lengths", "64", *QUICK)
    low = run("--import", "knob_backends", "--backends", "knobbed", "--knob", "0",
              "--lengths", "64", *QUICK, plugin=tmp_path)  # fmt: skip
    for refused, said in ((unknown, "unrecognized arguments: --knob"), (low, "--knob")):
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1


def test_help_lists_the_flags_of_installed_plugins(tmp_path, monkeypatch):
    """An entry point of an installed package brings flags: help then asks the registry."""
    import importlib.metadata

    from harness.cli.cli import parser_for
    from harness.measure import registry

    (tmp_path / "knob_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint("knob", "knob_plugin", registry.ENTRY_POINT_GROUP)
    found = {registry.ENTRY_POINT_GROUP: [point]}
    assert "--knob" not in parser_for(["--help"])._option_string_actions  # none installed
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found.get(group, []))
    monkeypatch.setattr(registry, "_entry_points", None)
    try:
        assert "--knob" in parser_for(["--help"])._option_string_actions
    finally:
        registry._REGISTRY.pop("knobbed", None)
