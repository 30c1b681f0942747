"""The ``cuda`` marker: ``pytest --collect-only -q -m cuda`` collects exactly the CUDA-only tests.

One collect-only run of the whole suite (a few seconds), with a small plugin that records every
item's markers and the skips it would take: the items ``-m cuda`` selects and the ones it leaves
out. CUDA-only means skipped for lack of a CUDA device: no item outside the selection may skip
for that (an unmarked ``skipif(not torch.cuda.is_available(), ...)`` would), and on a machine
without CUDA every selected item skips with ``tests/conftest.py``'s reason, so ``pytest -m cuda``
reports each one instead of failing or passing silently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REASON = "needs a CUDA device"  # tests/conftest.py's CUDA_REASON
# Reasons that say a test cannot run for want of CUDA (not, say, "this machine has CUDA").
LACKS_CUDA = re.compile(
    r"needs? (a |an )?(CUDA|GPU)|requires? (a |an )?(CUDA|GPU)|no (CUDA|GPU)|without (CUDA|GPU)"
    r"|(CUDA|GPU)[^.;]*not available",
    re.IGNORECASE,
)
KNOWN = (  # one per family of CUDA-only tests
    "tests/test_flex.py::test_cuda_bfloat16_runs",
    "tests/test_sdpa_kernels.py::test_cuda_math_matches_in_float32",
    "tests/test_xformers_ops.py::test_cuda_float32_symmetric_window_has_a_reason",
    "tests/test_longformer.py::test_matches_reference_cuda",
    "tests/test_strided.py::test_flex_matches_reference_cuda[True]",
)

# Loaded with -p: writes every item (selected or deselected by -m) with its markers and skips.
PROBE = """
import json, os

import pytest

_DESELECTED = []


def _active(mark):
    # True or False as pytest would decide; None for a string condition (evaluated at run time)
    conditions = mark.args or tuple(v for k, v in mark.kwargs.items() if k == "condition")
    if not conditions:
        return True
    if any(isinstance(c, str) for c in conditions):
        return None
    return any(bool(c) for c in conditions)


def _skips(item):
    found = []
    for mark in item.iter_markers("skip"):
        reason = mark.kwargs.get("reason", mark.args[0] if mark.args else "")
        found.append({"active": True, "reason": str(reason)})
    for mark in item.iter_markers("skipif"):
        found.append({"active": _active(mark), "reason": str(mark.kwargs.get("reason", ""))})
    return found


def _record(item, selected):
    marks = sorted({mark.name for mark in item.iter_markers()})
    return {"nodeid": item.nodeid, "selected": selected, "marks": marks, "skips": _skips(item)}


def pytest_deselected(items):
    _DESELECTED.extend(items)


def pytest_collection_finish(session):
    rows = [_record(i, True) for i in session.items] + [_record(i, False) for i in _DESELECTED]
    with open(os.environ["CUDA_MARKER_PROBE_OUT"], "w") as out:
        json.dump(rows, out)
"""


def collect_cuda(tmp_path: Path) -> tuple[list[str], list[dict]]:
    """``pytest --collect-only -q -m cuda`` over the suite: the node ids it prints, and the
    probe's record of every item."""
    (tmp_path / "cuda_marker_probe.py").write_text(PROBE)
    out = tmp_path / "items.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH")))),
        "CUDA_MARKER_PROBE_OUT": str(out),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
         "-p", "cuda_marker_probe", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if "::" in line]
    return printed, json.loads(out.read_text())


def lacks_cuda(skip: dict) -> bool:
    return skip["active"] is not False and bool(LACKS_CUDA.search(skip["reason"]))


def test_lacks_cuda_tells_reasons_apart():
    assert lacks_cuda({"active": True, "reason": REASON})
    assert lacks_cuda({"active": True, "reason": "CUDA is not available"})
    assert lacks_cuda({"active": None, "reason": "requires a GPU"})
    assert not lacks_cuda({"active": False, "reason": REASON})  # a skipif that does not fire
    assert not lacks_cuda({"active": True, "reason": "this machine has CUDA"})
    assert not lacks_cuda({"active": True, "reason": "xformers is not installed"})


def test_collect_only_m_cuda_is_exactly_the_cuda_only_tests(tmp_path: Path):
    printed, items = collect_cuda(tmp_path)
    selected = [row for row in items if row["selected"]]
    others = [row for row in items if not row["selected"]]
    # The probe saw what the command printed, and the whole suite besides.
    assert printed == [row["nodeid"] for row in selected]
    assert len(others) > len(selected) > 0
    assert all("cuda" in row["marks"] for row in selected)
    assert not [row["nodeid"] for row in others if "cuda" in row["marks"]]
    for known in KNOWN:
        assert known in printed, f"{known} is not collected by -m cuda"

    # Nothing outside the selection skips for want of CUDA: it would be a CUDA-only test
    # that ``pytest -m cuda`` never runs.
    unmarked = {
        row["nodeid"]: [s["reason"] for s in row["skips"] if lacks_cuda(s)]
        for row in others
        if any(lacks_cuda(s) for s in row["skips"])
    }
    assert not unmarked, f"CUDA-only tests without @pytest.mark.cuda: {unmarked}"

    # Inside it, each test skips with the shared reason exactly where there is no CUDA device.
    has_cuda = torch.cuda.is_available()
    for row in selected:
        reasons = [s["reason"] for s in row["skips"] if lacks_cuda(s)]
        if has_cuda:
            assert not reasons, (row["nodeid"], reasons)
        else:
            assert REASON in reasons, (row["nodeid"], row["skips"])
