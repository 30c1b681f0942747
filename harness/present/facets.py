"""How a report and the terminal name the points of a grid (``harness.analyse.grid``): a facet's
title ("head_dim 128, causal, forward"), a point's columns in a table, and backend labels short
enough for a terminal.

A run of one shape has no varying grid axis: its facets are its passes, titled as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from harness.analyse.grid import FULL_QUERIES, Facet, facet_values
from harness.present.figure_parts import PASS_TITLES


def axis_text(axis: str, value: object) -> str:
    """One axis at one value, as a title names it: "head_dim 64", "causal", "q_len = n",
    "structured inputs"."""
    if axis == "pass":
        return PASS_TITLES.get(str(value), str(value))
    if axis == "causal":
        return "causal" if str(value).lower() == "true" else "not causal"
    if axis == "q_len" and value == FULL_QUERIES:
        return "q_len = n"
    if axis == "inputs":
        return f"{value} inputs"
    return f"{axis} {value}"


def point_title(point: Iterable[tuple[str, object]]) -> str:
    return ", ".join(axis_text(axis, value) for axis, value in point)


def facet_title(facet: Facet) -> str:
    """The point, then the pass: just the pass's title in a run of one shape."""
    return ", ".join([*(axis_text(a, v) for a, v in facet.point), axis_text("pass", facet.pass_)])


def shape_column(df: pd.DataFrame, axes: Sequence[str]) -> pd.Series:
    """Each row's point of ``axes`` as text (for a table's "shape" column)."""
    values = [facet_values(df, a) for a in axes]
    return pd.Series(
        [point_title(zip(axes, row, strict=True)) for row in zip(*values, strict=True)],
        index=df.index,
        dtype=object,
    )


def with_shape(
    table: pd.DataFrame, rows: pd.DataFrame, axes: Sequence[str], at: int
) -> pd.DataFrame:
    """``table`` (one row per row of ``rows``) with a "shape" column at position ``at`` where
    ``axes`` vary; unchanged for a run of one shape."""
    if not axes:
        return table
    table = table.copy()
    table.insert(at, "shape", shape_column(rows, axes).to_numpy())
    return table


_LABEL = re.compile(r"^(?P<name>[^(]*)\((?P<items>.*)\)$")


def _items(label: str) -> tuple[str, dict[str, str]]:
    """A backend label's name and its parameters (``key=value``, or a flag by its name)."""
    m = _LABEL.match(label)
    if not m:
        return label, {}
    items = [i for i in m["items"].split(", ") if i]
    return m["name"], {i.split("=", 1)[0]: i for i in items}


def short_labels(labels: Iterable[str]) -> dict[str, str]:
    """Each label without the parameters that take one value among the labels of its backend
    (``longformer(window=128, dilation=1)`` and ``longformer(window=256, dilation=1)`` become
    ``longformer(window=128)`` and ``longformer(window=256)``; a backend with one variant is its
    name). Distinct labels stay distinct."""
    parsed = {label: _items(label) for label in dict.fromkeys(labels)}
    by_name: dict[str, list[dict[str, str]]] = {}
    for name, items in parsed.values():
        by_name.setdefault(name, []).append(items)
    short = {}
    for label, (name, items) in parsed.items():
        variants = by_name[name]
        keep = [i for k, i in items.items() if len({v.get(k) for v in variants}) > 1]
        short[label] = f"{name}({', '.join(keep)})" if keep else name
    if len(set(short.values())) < len(short):  # parsed wrongly (an odd label): keep them whole
        return {label: label for label in parsed}
    return short
