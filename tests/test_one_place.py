"""Each fact of the stored result is written in one place: the status names (``Status``), the
case key (``CASE_KEY``). A second spelling would drift from the first without a word."""

from __future__ import annotations

import ast
import pathlib

from harness.store.records import CASE_KEY, Status

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ("harness", "attention_impls", "tests")
SOURCES = [
    *sorted(p for f in FOLDERS for p in (ROOT / f).rglob("*.py") if p.name != "test_one_place.py"),
    ROOT / "run_bench.py",
]


def _constants(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_each_status_name_is_written_once():
    where: dict[str, list[str]] = {s.value: [] for s in Status}
    for path in SOURCES:
        for value in _constants(path):
            if value in where:
                where[value].append(str(path.relative_to(ROOT)))
    assert where == {s.value: ["harness/store/records.py"] for s in Status}


def test_the_case_key_is_written_once():
    """No other sequence of column names is a key: the case's identifying columns and nothing
    but key columns (a results header lists them among many others, and may)."""
    identity, keyish = set(CASE_KEY[:4]), {*CASE_KEY, "label"}  # backend, params, seq_len, pass
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if identity <= names <= keyish:
                    found.append(str(path.relative_to(ROOT)))
    assert found == ["harness/store/records.py"]
