"""The pytest-benchmark suite (tests/benchmarks) is collected only when named, so nothing else
would notice it break: it must at least import and describe a case as the harness does."""

from __future__ import annotations

import importlib

from harness.measure.case import Case
from harness.measure.timing import TimingSettings
from harness.store.records import Status
from harness.sweep.config import SweepConfig


def test_the_benchmark_suite_imports_and_describes_a_case(tmp_path):
    suite = importlib.import_module("tests.benchmarks.test_bench_backends")
    config = SweepConfig(lengths=(64,), backends=("longformer",), out_dir=tmp_path)
    case = Case(config.make_backend("longformer"), config.inputs(64, "fwd"), "fwd",
                TimingSettings(), 8)  # fmt: skip
    row = suite.case_description(case, {"status": Status.OK})
    assert row["backend"] == "longformer" and row["useful_flops"] == row["flops"] > 0
