"""``report``, ``compare`` and ``export`` read stored files only: they run where torch is not
installed (here: where importing torch, or the backends, fails), as on a laptop that only reads
runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VALID_RUN = ROOT / "tests" / "data" / "valid-run"

# Runs run_bench.py's main with every import of torch and attention_impls failing.
WITHOUT_TORCH = """
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "attention_impls", "xformers"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv = ["run_bench.py", *sys.argv[1:]]
try:
    runpy.run_path("run_bench.py", run_name="__main__")
finally:
    assert "torch" not in sys.modules
"""


def without_torch(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(VALID_RUN, a)
    shutil.copytree(VALID_RUN, b)
    return a, b


def test_report_without_torch(runs):
    a, _ = runs
    done = without_torch("report", a)
    assert done.returncode == 0, done.stderr
    text = (a / "report.md").read_text()
    assert "Scaling exponents" in text and "TFLOP/s" in text and (a / "report.html").is_file()


def test_compare_without_torch(runs):
    a, b = runs
    done = without_torch("compare", a, b)
    assert done.returncode in (0, 3), done.stderr  # identical runs: nothing regressed
    assert "regressed" not in done.stdout.split("written to")[-1]
    assert (b / "compare.md").is_file()


def test_export_without_torch(runs):
    a, _ = runs
    done = without_torch("export", a)
    assert done.returncode == 0, done.stderr
    cases = json.loads((a / "results.json").read_text())
    assert cases and all("tflops" in c and "run_device_name" in c for c in cases)


def test_a_format_1_run_without_torch_says_how_to_upgrade(runs):
    """A run from before rows carried their facts needs the backends once (``upgrade``)."""
    a, _ = runs
    import pandas as pd

    df = pd.read_csv(a / "results.csv")
    df.drop(columns=["flops", "promise", "sparse", "yardstick"]).to_csv(
        a / "results.csv", index=False
    )
    done = without_torch("report", a)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "upgrade" in done.stderr, done.stderr
    # with the backends at hand it reads, and upgrade stores the facts for next time
    upgraded = subprocess.run(
        [sys.executable, "run_bench.py", "upgrade", str(a)], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert without_torch("report", a).returncode == 0
