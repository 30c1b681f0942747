"""The harness's layers: imports only go down, and analysis and presentation never need torch.

Layers, bottom to top: ``store`` (the stored result), ``measure`` (one case), ``sweep`` (many
cases), ``analyse`` (statistics on stored rows), ``present`` (tables, plots, documents), ``cli``.
``analyse`` and ``present`` read stored runs only, so they may import ``store`` but neither
``measure`` nor ``sweep``: that is what lets ``report`` and ``compare`` run without torch.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

HARNESS = pathlib.Path(__file__).resolve().parent.parent / "harness"

# What each layer may import, besides itself.
ALLOWED = {
    "store": set(),
    "measure": {"store"},
    "sweep": {"store", "measure"},
    "analyse": {"store"},
    "present": {"store", "analyse"},
    "cli": {"store", "measure", "sweep", "analyse", "present"},
}
TORCH_FREE = ("store", "analyse", "present")


def _imports(path: pathlib.Path) -> set[str]:
    """Top-level package paths this module imports (at any depth in its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def layer_graph() -> dict[tuple[str, str], list[str]]:
    """(from layer, to layer) -> the modules that make that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(HARNESS.glob("*/*.py")):
        layer = path.parent.name
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "harness" and len(parts) > 1 and parts[1] in ALLOWED:
                target = parts[1]
            elif parts[0] in ("torch", "attention_impls"):
                target = parts[0]
            else:
                continue
            if target != layer:
                edges.setdefault((layer, target), []).append(path.name)
    return edges


def test_every_module_lives_in_a_layer() -> None:
    loose = [p.name for p in HARNESS.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside the layers: {loose}"
    assert {p.name for p in HARNESS.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        ALLOWED
    )


def test_imports_only_go_down() -> None:
    upward = {
        f"{a} -> {b} ({', '.join(sorted(set(m)))})"
        for (a, b), m in layer_graph().items()
        if b in ALLOWED and b not in ALLOWED[a]
    }
    assert upward == set()


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_torch_free_layers_import_no_torch(layer: str) -> None:
    edges = layer_graph()
    assert (layer, "torch") not in edges, edges.get((layer, "torch"))
    assert (layer, "attention_impls") not in edges, edges.get((layer, "attention_impls"))
