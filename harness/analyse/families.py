"""A run's backends by family (results format 5): every family's implementations, ours first and
then the peers' (``implementation``: "ours" or the package a peer backend drives), and the
fastest implementation of each family at each point of the grid and length.

A family is one attention pattern or formula (full, longformer, bigbird, reformer, linformer,
performer, ...); its implementations compute the same thing, so their times, memory and errors
compare directly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.analyse import grid
from harness.analyse.analysis import latest, measured
from harness.store.records import ADDED_COLUMNS

OURS = ADDED_COLUMNS["implementation"][1]
FIRST = "full"  # the family every other is measured against comes first


def implementation(df: pd.DataFrame) -> pd.Series:
    """Each row's implementation ("ours" where a frame has no such column: before format 5)."""
    if "implementation" not in df.columns:
        return pd.Series(OURS, index=df.index, dtype=object)
    return df["implementation"].fillna(OURS).astype(str).replace("", OURS)


def is_ours(df: pd.DataFrame) -> pd.Series:
    return implementation(df) == OURS


def _pattern_values(text: object) -> dict:
    try:
        values = json.loads(str(text)) if text else {}
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def pattern_names(df: pd.DataFrame) -> pd.Series:
    """Each row's pattern, readably: its family, and the pattern parameters (format 6's
    ``pattern``) that differ between the patterns of that family in ``df``, e.g.
    ``bigbird(global_blocks=0, random_blocks=0)``. Rows without a recorded pattern (a run
    before format 6) are their family's."""
    families = df["family"].astype(str)
    texts = df["pattern"] if "pattern" in df.columns else pd.Series("", index=df.index)
    texts = texts.fillna("").astype(str)
    names = families.copy()
    for family in families.unique():
        at = families == family
        found = {t: _pattern_values(t) for t in texts[at].unique() if t}
        if len(found) < 2:
            continue
        keys = sorted({k for v in found.values() for k in v} - {"family"})
        varying = [k for k in keys if len({json.dumps(v.get(k)) for v in found.values()}) > 1]
        for text, values in found.items():
            items = ", ".join(f"{k}={json.dumps(values.get(k))}" for k in varying)
            names[at & (texts == text)] = f"{family}({items})"
    return names


def family_order(df: pd.DataFrame) -> list[str]:
    """The run's families: full attention first, then the others in the order first seen."""
    seen = list(dict.fromkeys(df["family"].astype(str)))
    return sorted(seen, key=lambda f: (f != FIRST, seen.index(f)))


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows grouped by family (``family_order``), ours before the peers within each,
    otherwise in their order (stable); as they are in a frame without families (a hand-made
    one)."""
    if "family" not in df.columns:
        return df
    rank = {f: i for i, f in enumerate(family_order(df))}
    key = df["family"].astype(str).map(rank) * 2 + (~is_ours(df)).astype(int)
    return df.iloc[np.argsort(key.to_numpy(), kind="stable")]


COLUMNS = ["pass", "family", "pattern", "seq_len", "label", "implementation", "time_median_ms",
           "peak_mem_bytes", "against", "against_implementation", "time_ratio",
           "memory_ratio"]  # fmt: skip


def fastest(df: pd.DataFrame) -> pd.DataFrame:
    """Per facet (mode and point of the varying grid axes, columns too), pattern (a family and
    the values of its parameters: ``pattern_names``) and length: the pattern's fastest measured
    implementation (``label``, ``implementation``, its time and memory), and what it is
    measured ``against``: the fastest on the other side (the fastest peer when ours is fastest,
    our fastest when a peer is), or where the pattern has no peer there, its runner-up (NaN
    where it ran alone); ``time_ratio`` and ``memory_ratio``: the other's time (memory) over
    the fastest's."""
    ok = measured(latest(df))
    ok = ok[ok["time_median_ms"] > 0]
    ok = ok.assign(_pattern=pattern_names(ok))
    axes = grid.varying_grid_axes(ok)
    rows = []
    for facet, g in grid.facets(ok):
        g = g.assign(_ours=is_ours(g), _impl=implementation(g))
        of_family = {f: g.loc[g["family"].astype(str) == f, "_pattern"] for f in family_order(g)}
        patterns = [(f, p) for f, names in of_family.items() for p in dict.fromkeys(names)]
        for family, pattern in patterns:
            for n, at in g[g["_pattern"] == pattern].groupby("seq_len", sort=True):
                ranked = at.sort_values("time_median_ms", kind="stable")
                best = ranked.iloc[0]
                others = ranked[ranked["_ours"] != best["_ours"]]
                if others.empty:
                    others = ranked.iloc[1:]
                other = others.iloc[0] if not others.empty else None
                rows.append({
                    "pass": facet.pass_, **dict(facet.point), "family": family,
                    "pattern": pattern, "seq_len": int(n), "label": best["label"],
                    "implementation": best["_impl"],
                    "time_median_ms": float(best["time_median_ms"]),
                    "peak_mem_bytes": best["peak_mem_bytes"],
                    "against": other["label"] if other is not None else np.nan,
                    "against_implementation": other["_impl"] if other is not None else np.nan,
                    "time_ratio": (other["time_median_ms"] / best["time_median_ms"]
                                   if other is not None else np.nan),
                    "memory_ratio": _ratio(other, best, "peak_mem_bytes"),
                })  # fmt: skip
    columns = [COLUMNS[0], *axes, *COLUMNS[1:]]
    return pd.DataFrame(rows, columns=columns)


def _ratio(other: pd.Series | None, best: pd.Series, column: str) -> float:
    if other is None or not (pd.notna(best[column]) and best[column] > 0):
        return np.nan
    return float(other[column] / best[column]) if pd.notna(other[column]) else np.nan
