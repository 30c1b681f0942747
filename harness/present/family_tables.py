"""The report's tables by family (``harness.analyse.families``): ours beside the peers.

- ``glance_table``: per pattern (a family and its parameters) and length, the fastest
  implementation, and how many times slower (and heavier) the best of the other side was: the
  fastest peer where ours is fastest, ours where a peer is (the pattern's runner-up where it has
  no peer);
- ``family_tables``: per family, each implementation's time, memory and error against full
  attention at every length, ours first, the peers after;
- ``error_table``: the error against full attention of every backend, family by family, on each
  input distribution of the run (``inputs``), with ``inputs_notes`` saying what each one is.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from harness.analyse import analysis, grid
from harness.analyse.families import fastest, implementation, ordered
from harness.present.facets import axis_text, shape_column
from harness.present.grid_tables import axis_value
from harness.present.plots import length_text
from harness.present.summary import fmt_bytes, fmt_ms
from harness.store import distributions
from harness.store.records import Status


def _times(ratio: float) -> str:
    return f"{ratio:.3g}×" if pd.notna(ratio) else ""


def glance_table(df: pd.DataFrame) -> pd.DataFrame:
    """``families.fastest`` as display strings: a pass column where the run has several, a
    column per varying grid axis; no "against" columns where no family has two backends."""
    best = fastest(df)
    axes = grid.varying_grid_axes(analysis.measured(analysis.latest(df)))
    several = best["pass"].nunique() > 1
    table = pd.DataFrame(
        {
            **({"pass": best["pass"].map(lambda p: axis_text("pass", p))} if several else {}),
            **{a: best[a].map(lambda v, a=a: axis_value(a, v)) for a in axes},
            "pattern": best["pattern"],
            "n": best["seq_len"].map(length_text),
            "fastest": best["label"],
            "implementation": best["implementation"],
            "time": best["time_median_ms"].map(fmt_ms),
            "memory": best["peak_mem_bytes"].map(lambda b: fmt_bytes(b) if pd.notna(b) else ""),
            "against": [
                "" if pd.isna(a) else f"{a} ({i})"
                for a, i in zip(best["against"], best["against_implementation"], strict=True)
            ],
            "its time": best["time_ratio"].map(_times),
            "its memory": best["memory_ratio"].map(_times),
        }
    )
    if best["against"].isna().all():
        return table.drop(columns=["against", "its time", "its memory"])
    return table


def _cell(r: pd.Series) -> str:
    """time · memory · error against full attention, or the case's status."""
    if r["status"] != Status.OK:
        return "OOM" if r["status"] == Status.OOM else str(r["status"])
    memory = fmt_bytes(r["peak_mem_bytes"]) if pd.notna(r["peak_mem_bytes"]) else "–"
    err = f"{r['err_vs_full']:.2g}" if pd.notna(r.get("err_vs_full")) else "–"
    return f"{fmt_ms(r['time_median_ms'])} · {memory} · {err}"


def _index(rows: pd.DataFrame, several_passes: bool, axes: Sequence[str]) -> tuple:
    """Rows with the columns that name a table row: pass, shape, backend, implementation."""
    index = ["backend", "implementation"]
    rows = rows.assign(backend=rows["label"], implementation=implementation(rows))
    if axes:
        rows, index = rows.assign(shape=shape_column(rows, axes)), ["shape", *index]
    if several_passes:
        passes = rows["pass"].map(lambda p: axis_text("pass", p))
        rows, index = rows.assign(mode=passes), ["mode", *index]
    return rows, index


def _by_length(rows: pd.DataFrame, index: list[str], cell) -> pd.DataFrame:
    """One row per ``index`` value (in ``rows``' order), a column per length of ``cell``."""
    rows = rows.assign(cell=rows.apply(cell, axis=1) if len(rows) else [])
    table = rows.pivot_table(
        index=index, columns="seq_len", values="cell", aggfunc="last", sort=False
    ).fillna("")
    table = table[sorted(table.columns)]
    table.columns = [length_text(c) for c in table.columns]
    return table.reset_index()


def family_tables(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(family, table) for each family of the run: a row per implementation (and mode and point
    of the grid where those vary, facet by facet), ours first; a column per length."""
    rows = analysis.latest(df)
    axes = grid.varying_grid_axes(rows)
    several = rows["pass"].nunique() > 1
    out = []
    for family in dict.fromkeys(ordered(rows)["family"].astype(str)):
        of = rows[rows["family"].astype(str) == family]
        by_facet = [ordered(g) for _, g in grid.facets(of)]
        of, index = _index(pd.concat(by_facet), several, axes)
        out.append((family, _by_length(of, index, _cell)))
    return out


def _error_pass(ok: pd.DataFrame) -> str | None:
    """The mode whose errors the error table shows: the first that measured any (every mode
    checks the same forward output)."""
    has = ok[ok["err_vs_full"].notna()] if "err_vs_full" in ok.columns else ok.iloc[:0]
    return None if has.empty else str(has["pass"].iloc[0])


def error_table(df: pd.DataFrame) -> pd.DataFrame:
    """The relative error against full attention per backend (family by family, ours first),
    input distribution and point of the other varying grid axes, a column per length."""
    ok = analysis.measured(analysis.latest(df))
    pass_ = _error_pass(ok)
    if pass_ is None:
        return pd.DataFrame()
    rows = ok[ok["pass"] == pass_]
    axes = [a for a in grid.varying_grid_axes(rows) if a != "inputs"]
    rows = rows.assign(inputs=_inputs(rows))
    names = {name: i for i, name in enumerate(dict.fromkeys(rows["inputs"]))}
    labels = {label: i for i, label in enumerate(dict.fromkeys(rows["label"]))}
    rows = ordered(
        rows.assign(_l=rows["label"].map(labels), _i=rows["inputs"].map(names)).sort_values(
            ["_l", "_i"], kind="stable"
        )
    )
    rows, index = _index(rows, False, axes)
    index = ["family", *index[:-2], "backend", "implementation", "inputs"]
    return _by_length(
        rows, index, lambda r: "" if pd.isna(r["err_vs_full"]) else f"{r['err_vs_full']:.2g}"
    )


def _inputs(df: pd.DataFrame) -> pd.Series:
    if "inputs" not in df.columns:
        return pd.Series(distributions.DEFAULT, index=df.index, dtype=object)
    return df["inputs"].astype(str)


def inputs_notes(df: pd.DataFrame, meta: dict) -> list[str]:
    """A line per input distribution of the run: its name and what it is (as the run recorded
    it in meta.json, else in this version's words)."""
    recorded = meta.get("input_distributions") or {}
    return [
        f"**{name}**: {recorded.get(name) or distributions.description(name)}."
        for name in dict.fromkeys(_inputs(df))
    ]
