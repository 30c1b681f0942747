"""``run_bench.py report RUN_A RUN_B``: two runs side by side, from their stored files alone.

Cases are matched on backend (with parameters), pass, length and shape. Device, dtype and seed
are left out of the match when each run has a single value of them (a CPU run against a GPU
run, float32 against bfloat16): they describe the runs, and the report names them.

Each time ratio comes with the 95% percentile bootstrap interval of the ratio of the two cases'
sample medians (``significance.bootstrap_ratio_ci``), drawn as error bars; a time that may not be
believed (``harness.analyse.stability``, judged in its own run) is marked ⚠ in the case table and
its reasons are listed under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analyse import grid, stability
from harness.analyse.significance import bootstrap_ratio_ci
from harness.present import plots
from harness.present.context import context_table
from harness.present.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Table,
    Text,
    to_html,
    to_markdown,
)
from harness.present.facets import shape_column, with_shape
from harness.present.plots import length_text
from harness.present.report import STABILITY_NOTE, load_run, subtitle
from harness.present.report_tables import fmt_ms
from harness.present.summary import fmt_bytes
from harness.store import runs
from harness.store.records import Status, parse_floats
from harness.store.runs import calibration_ms
from harness.store.storage import RunFolderError

# run axes left out of the match where each run holds one value: a CPU run compares with a GPU run
FREE_AXES = ("device", "dtype", "seed")


def with_warnings(df: pd.DataFrame, run_calibration_ms: float | None) -> pd.DataFrame:
    """The run's rows with a ``warnings`` column: the stability rules each case's time breaks,
    judged against its own run's calibration time ``run_calibration_ms`` ([] for a stable case)."""
    return df.assign(warnings=stability.warnings_of(df, run_calibration_ms))


def _interval(r: pd.Series) -> tuple[float, float]:
    a = parse_floats(r.get("time_samples_ms_a"))
    b = parse_floats(r.get("time_samples_ms_b"))
    # one sample a side would give an interval of width zero: certainty nobody measured
    if pd.isna(r["time_ratio"]) or len(a) < 2 or len(b) < 2:
        return np.nan, np.nan
    return bootstrap_ratio_ci(a, b)


def match(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The cases both runs hold, side by side (suffixes ``_a``, ``_b``), and the run-level
    columns that differ between the runs. ``time_ratio`` is B/A of the medians;
    ``time_ratio_low`` and ``time_ratio_high`` its 95% bootstrap interval from both cases'
    samples (NaN where a side has fewer than two)."""
    keys = runs.matching_key(a, b, free=FREE_AXES)
    differ = [c for c in FREE_AXES if c not in keys and a[c].iloc[0] != b[c].iloc[0]]
    m = a.merge(b, on=keys, suffixes=("_a", "_b"))
    m["label"] = m["label_b"]  # the newer run's name for the case
    both = (m["status_a"] == Status.OK) & (m["status_b"] == Status.OK)
    m["time_ratio"] = (m["time_median_ms_b"] / m["time_median_ms_a"]).where(both)
    m["memory_ratio"] = (
        m["peak_mem_bytes_b"] / m["peak_mem_bytes_a"].where(m["peak_mem_bytes_a"] > 0)
    ).where(both)
    intervals = [_interval(r) for _, r in m.iterrows()]
    m["time_ratio_low"] = [low for low, _ in intervals]
    m["time_ratio_high"] = [high for _, high in intervals]
    order = {label: i for i, label in enumerate(dict.fromkeys([*a["label"], *b["label"]]))}
    passes = {p: i for i, p in enumerate(dict.fromkeys([*a["pass"], *b["pass"]]))}
    m = m.assign(_p=m["pass"].map(passes), _l=m["label"].map(order))
    return m.sort_values(["_p", "_l", "seq_len"]).drop(columns=["_p", "_l"]), differ


def _warnings(r: pd.Series, side: str) -> list[str]:
    found = r.get(f"warnings_{side}")
    return found if isinstance(found, list) else []  # absent: not judged (``with_warnings``)


def _side(r: pd.Series, side: str, metric: str) -> str:
    if r[f"status_{side}"] != Status.OK:
        return r[f"status_{side}"]
    if metric == "time":
        mark = f" {stability.MARK}" if _warnings(r, side) else ""
        return fmt_ms(r[f"time_median_ms_{side}"]) + mark
    value = r[f"peak_mem_bytes_{side}"]
    return fmt_bytes(value) if pd.notna(value) else ""


def _ratio(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.3g}×"


def case_table(m: pd.DataFrame) -> pd.DataFrame:
    """One row per matched case; its point of the grid in a "shape" column where it varies."""
    table = pd.DataFrame(
        {
            "backend": m["label"],
            "pass": m["pass"],
            "n": m["seq_len"].map(length_text),
            "time A": [_side(r, "a", "time") for _, r in m.iterrows()],
            "time B": [_side(r, "b", "time") for _, r in m.iterrows()],
            "time B/A": m["time_ratio"].map(_ratio),
            "memory A": [_side(r, "a", "memory") for _, r in m.iterrows()],
            "memory B": [_side(r, "b", "memory") for _, r in m.iterrows()],
            "memory B/A": m["memory_ratio"].map(_ratio),
        }
    )
    return with_shape(table, m, grid.varying_grid_axes(m), 2)


def unstable_notes(m: pd.DataFrame) -> list[str]:
    """One line per case marked in the case table, with each side's reasons."""
    return stability.notes(
        [
            (
                f"{r['label']} {r['pass']} at {length_text(r['seq_len'])}",
                [f"{side.upper()}: {w}" for side in "ab" for w in _warnings(r, side)],
            )
            for _, r in m.iterrows()
        ]
    )


def geomean_table(m: pd.DataFrame) -> pd.DataFrame:
    """Per backend, pass and point of the grid (a "shape" column where it varies), the geometric
    mean of the ratios over the lengths both measured."""

    def gm(x: pd.Series) -> float:
        x = x[(x > 0) & np.isfinite(x)]
        return float(np.exp(np.log(x).mean())) if len(x) else np.nan

    axes = grid.varying_grid_axes(m)
    m = m.assign(shape=shape_column(m, axes)) if axes else m
    g = m.groupby(["label", "pass", *(["shape"] if axes else [])], sort=False)
    return (
        pd.DataFrame(
            {
                "time B/A": g["time_ratio"].apply(gm).map(_ratio),
                "memory B/A": g["memory_ratio"].apply(gm).map(_ratio),
                "lengths": g["time_ratio"].apply(lambda x: int(x.notna().sum())),
            }
        )
        .reset_index()
        .rename(columns={"label": "backend"})
    )


def write(run_a: Path, run_b: Path, out_dir: Path | None = None) -> Path:
    """Writes ``report.md``, ``report.html`` and ``ratios.png`` comparing B with A; returns the
    Markdown path. ``out_dir`` defaults to ``RUN_B/vs-<name of A>``."""
    run_a, run_b = Path(run_a), Path(run_b)
    a, meta_a = load_run(run_a)
    b, meta_b = load_run(run_b)
    a, b = with_warnings(a, calibration_ms(meta_a)), with_warnings(b, calibration_ms(meta_b))
    m, differ = match(a, b)
    if m.empty:
        raise RunFolderError(f"{run_a} and {run_b} have no case in common")
    out = Path(out_dir) if out_dir else run_b / f"vs-{run_a.resolve().name}"
    name_a, name_b = run_a.resolve().name, run_b.resolve().name
    common = m.drop_duplicates(grid.present(m, grid.CASE_COLUMNS)).shape[0]
    only_a, only_b = len(a) - common, len(b) - common
    differences = [f"{c}: {a[c].iloc[0]} (A) vs {b[c].iloc[0]} (B)" for c in differ]
    axes = grid.varying_grid_axes(m)  # a grid: a line per series and point, never mixed
    lines = m.assign(label=m["label"] + " @ " + shape_column(m, axes)) if axes else m
    fig = plots.ratio_figure(lines, f"B / A per case: {name_b} / {name_a}")
    notes = unstable_notes(m)
    with runs.writing(out):
        path = plots.save(fig, out / "ratios.png")
    blocks: list[Block] = [
        Heading(f"Comparison: {name_b} (B) against {name_a} (A)", 1),
        Text(
            f"{len(m)} cases in common; {max(only_a, 0)} only in A, {max(only_b, 0)} only in B. "
            "Below 1× B is faster or leaner than A."
        ),
        Bullets(
            (
                f"A: `{run_a}`, {subtitle(a, meta_a)}",
                f"B: `{run_b}`, {subtitle(b, meta_b)}",
                *(["the runs differ in " + "; ".join(differences)] if differences else []),
            )
        ),
        Heading("Per backend"),
        Table(geomean_table(m), "Geometric mean of B/A over the lengths both runs measured."),
        Text(
            "Error bars: the 95% bootstrap interval of each time ratio, from both cases' "
            "samples; where an interval holds 1×, the runs do not differ measurably in that case."
        ),
        Image(path, "time and memory ratios B/A against length"),
        Heading("Per case"),
        Text(STABILITY_NOTE),
        Table(case_table(m)),
        *([Bullets(tuple(notes))] if notes else []),
        Heading("Context of A"),
        Table(context_table(meta_a)),
        Heading("Context of B"),
        Table(context_table(meta_b)),
    ]
    with runs.writing(out):
        (out / "report.md").write_text(to_markdown(blocks))
        (out / "report.html").write_text(to_html(blocks, f"attention-bench: {name_b} vs {name_a}"))
    return out / "report.md"
