"""The grid of a run (results format 4): which columns name a case, a series and a point of the
grid; which axes vary in a run (its facets, each a sub-run of one mode at one point of the
grid).

Every analysis keys on these columns so that no two points of a grid are ever mixed. A frame
without some of the axes (a hand-made one, in tests) keys on those it has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from harness.store.records import GRID_AXES

POINT_COLUMNS = GRID_AXES  # a point of the grid, besides the length
SERIES_COLUMNS = ("label", "pass", *GRID_AXES)  # one line of a figure: measured per length
CASE_COLUMNS = ("label", "pass", "seq_len", *GRID_AXES)  # one case of a run
FACET_AXES = ("pass", *GRID_AXES)
# q_len equals the length except when decoding: as a facet it is "n" there, not one per length
FULL_QUERIES = "n"


def present(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Those of ``columns`` that ``df`` has, in order."""
    return [c for c in columns if c in df.columns]


def facet_values(df: pd.DataFrame, axis: str) -> pd.Series:
    """The values of ``axis`` as a facet: q_len as ``FULL_QUERIES`` where it equals the length."""
    if axis == "q_len" and "seq_len" in df.columns:
        q = df["q_len"]
        return q.astype(object).where(q.to_numpy() != df["seq_len"].to_numpy(), FULL_QUERIES)
    return df[axis]


def facet_value(row: Mapping[str, object], axis: str) -> object:
    """One row's value of ``axis`` as a facet (``facet_values``)."""
    if axis == "q_len" and "seq_len" in row and row["q_len"] == row["seq_len"]:
        return FULL_QUERIES
    return row[axis]


def varying_axes(df: pd.DataFrame) -> list[str]:
    """The axes of ``FACET_AXES`` (pass and the grid's) holding more than one value in ``df``."""
    return [a for a in present(df, FACET_AXES) if facet_values(df, a).nunique(dropna=False) > 1]


def varying_grid_axes(df: pd.DataFrame) -> list[str]:
    """``varying_axes`` less the pass: the axes a report adds to the pass's sections."""
    return [a for a in varying_axes(df) if a != "pass"]


def keys(df: pd.DataFrame, columns: Sequence[str]) -> list[pd.Series]:
    """Groupers for ``columns`` (those ``df`` has), q_len as a facet: a ``groupby`` on them puts
    every length of one series in one group."""
    return [facet_values(df, c).rename(c) for c in present(df, columns)]


def series_keys(df: pd.DataFrame) -> list[pd.Series]:
    return keys(df, SERIES_COLUMNS)


@dataclass(frozen=True)
class Facet:
    """A sub-run: one mode at one point of the axes that vary (none: a run of one shape)."""

    pass_: str
    point: tuple[tuple[str, object], ...]  # (axis, facet value) of each varying grid axis

    def select(self, df: pd.DataFrame) -> pd.Series:
        """Which rows of ``df`` are this facet's."""
        mask = df["pass"] == self.pass_
        for axis, value in self.point:
            mask &= facet_values(df, axis).astype(str) == str(value)
        return mask


def _tuple(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def facets(df: pd.DataFrame) -> list[tuple[Facet, pd.DataFrame]]:
    """Each facet of the run with its rows: the modes in the order first seen, within each the
    points of the varying grid axes in the order first seen."""
    axes = varying_grid_axes(df)
    groups = df.groupby(["pass", *keys(df, axes)], sort=False)
    found = [(Facet(v[0], tuple(zip(axes, v[1:], strict=True))), g)
             for v, g in ((_tuple(v), g) for v, g in groups)]  # fmt: skip
    modes = {p: i for i, p in enumerate(dict.fromkeys(df["pass"]))}
    points = {p: i for i, p in enumerate(dict.fromkeys(f.point for f, _ in found))}
    return sorted(found, key=lambda fg: (modes[fg[0].pass_], points[fg[0].point]))


def points(df: pd.DataFrame, axes: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """The rows at each point of ``axes`` (facet values), in the order first seen."""
    if not axes:
        yield (), df
        return
    for values, g in df.groupby(keys(df, axes), sort=False):
        yield _tuple(values), g
