"""``run_bench.py report RUN_DIR``: the report of one run, from its stored files alone.

Writes ``report.md`` (tables and text, with the figures as PNG files beside it) and a
self-contained ``report.html`` into the run folder. Sections: at a glance (the fastest backend
per pass, the fastest implementation of each family against the peers), context, results per
pass (tables and figures), the families (ours beside the peers: time, memory, error), scaling
exponents, crossover lengths, achieved FLOP rates, accuracy (the error against full attention
per family and input distribution), and the cases that did not run or finish. A time that may
not be believed (``harness.analyse.stability``) is marked ⚠ and its reasons are listed under
its table.

A grid run (``harness.analyse.grid``: axes besides the length that take several values) adds
the fastest backend per point and length, and gives each pass's results a subsection per point
of the grid (a facet, "head_dim 128, causal, forward"); its figures are one per pass and
quantity, a panel per point (``facet_figures``). The other sections name each row's point.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analyse import analysis, grid, stability
from harness.present import plots
from harness.present.context import context_table
from harness.present.document import (
    Block,
    Bullets,
    Heading,
    Table,
    Text,
    to_html,
    to_markdown,
)
from harness.present.facets import axis_text, facet_title
from harness.present.family_tables import error_table, family_tables, glance_table, inputs_notes
from harness.present.report_results import best_section, grid_results, pass_results
from harness.present.report_tables import (
    accuracy_table,
    crossover_table,
    exponent_table,
    failure_table,
    glance,
    glance_crossovers,
    rate_table,
    setup_table,
)
from harness.store import runs
from harness.store.distributions import DEFAULT as DEFAULT_INPUTS
from harness.store.records import Status
from harness.store.runs import calibration_ms

REPORT_MD, REPORT_HTML = "report.md", "report.html"
STABILITY_NOTE = (
    f"{stability.MARK} beside a time: it may not be believed (its samples spread widely, or the "
    "machine was busy or changed speed while it was timed); the reasons are listed under its "
    "table. See the README, section “How stable is a number”."
)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """The run's rows (the last of each case) and its meta; RunFolderError when unreadable
    (``runs.load_run``, the check compare and baseline save make too)."""
    df, meta = runs.load_run(run_dir)
    return analysis.with_rates(analysis.latest(df), str(meta.get("device_name", ""))), meta


def subtitle(df: pd.DataFrame, meta: dict) -> str:
    """The device and the shape the run's rows share (a grid's varying axes left out)."""
    shape, varying = df.iloc[0], set(grid.varying_grid_axes(df))
    parts = [
        str(meta.get("device_name", shape["device"])),
        *([str(shape["dtype"])] if "dtype" not in varying else []),
        *([f"batch {shape['batch']}"] if "batch" not in varying else []),
        *([f"{shape['heads']} heads"] if "heads" not in varying else []),
        *([f"head_dim {shape['head_dim']}"] if "head_dim" not in varying else []),
    ]
    if "kv_heads" in shape and "kv_heads" not in varying and shape["kv_heads"] != shape["heads"]:
        parts.append(f"{shape['kv_heads']} key/value heads")
    decoding = "q_len" in shape and shape["q_len"] != shape["seq_len"]
    if decoding and "q_len" not in varying:
        parts.append(f"q_len {shape['q_len']}")
    if "documents" in shape and "documents" not in varying and shape["documents"] != 1:
        parts.append(f"{shape['documents']} documents")
    if (
        "causal" in shape
        and "causal" not in varying
        and axis_text("causal", shape["causal"]) == "causal"
    ):
        parts.append("causal")
    if "inputs" in shape and "inputs" not in varying and shape["inputs"] != DEFAULT_INPUTS:
        parts.append(axis_text("inputs", shape["inputs"]))
    return ", ".join(parts)


def build(run_dir: Path) -> tuple[list[Block], list[tuple[Path, object]]]:
    """The report's blocks, and the figures to save (path, Figure) before rendering."""
    df, meta = load_run(run_dir)
    run_calibration = calibration_ms(meta)  # None for a run recorded before the calibration
    sub = subtitle(df, meta)
    figures: list[tuple[Path, object]] = []
    counts = df["status"].value_counts()
    exps, cross = analysis.exponents(df), analysis.crossovers(df)
    pays_off = [] if cross.empty else glance_crossovers(cross, analysis.yardstick_labels(df))
    axes = grid.varying_grid_axes(df)
    over = f", {len(list(grid.points(df, axes)))} points of {' × '.join(axes)}" if axes else ""
    blocks: list[Block] = [
        Heading(f"Attention benchmark: {Path(run_dir).resolve().name}", 1),
        Text(
            f"{len(df)} cases on {sub}{over}: "
            + ", ".join(f"{counts[s]} {s}" for s in Status if s in counts)
            + ". Generated by `run_bench.py report` from `results.csv` and `meta.json` alone."
        ),
        Heading("At a glance"),
        Bullets(tuple(glance(df, run_calibration) + pays_off)),
        *_family_glance(df),
        Heading("Context"),
        Table(context_table(meta)),
        Text(STABILITY_NOTE),
    ]
    refs = {r: analysis.relative_to(df, r) for r in analysis.yardsticks(df)}
    styles = plots.Styles(list(df["label"]))
    if axes:
        blocks += best_section(df)
        blocks += grid_results(Path(run_dir), df, axes, refs, sub, styles, run_calibration,
                                figures)  # fmt: skip
    else:
        for pass_ in df["pass"].unique():
            blocks += pass_results(Path(run_dir), df, pass_, refs, sub, styles, run_calibration,
                                    figures)  # fmt: skip
    blocks += _family_section(df)
    blocks += [
        Heading("Scaling exponents"),
        Text(
            "The slope of log(time) and log(memory) against log(n), fitted by least squares over "
            "the measured lengths (± one standard error of the slope), and over the three "
            "longest ones, where fixed costs matter least. The promise is the scheme's "
            "complexity; its exponent is the slope the promise has over the same lengths "
            "(n log n has a slope slightly above 1). ⚠ marks a memory exponent more than "
            f"{analysis.MEMORY_SLACK} above the promise."
        ),
        Table(exponent_table(exps))
        if not exps.empty
        else Text("No backend finished at two or more lengths: nothing to fit."),
    ]
    if not cross.empty:
        blocks += [
            Heading("Crossover lengths"),
            Text(
                "For each sparse backend against each full-attention backend: the shortest "
                "measured length from which it is faster (uses less memory) at every longer "
                "measured length; in brackets, where the two curves cross by log-log "
                "interpolation between the neighbouring lengths. A reference that ran out of "
                "memory or time counts as beaten."
            ),
            Table(crossover_table(cross)),
        ]
    blocks += _rate_section(df, meta) + _setup_section(df) + _accuracy_section(df, meta)
    blocks += _failure_section(df)
    return blocks, figures


def _rate_section(df: pd.DataFrame, meta: dict) -> list[Block]:
    if df["tflops"].isna().all():
        return []
    peak = analysis.flops.peak_tflops(str(meta.get("device_name", "")))
    text = (
        "Useful FLOPs / median time. Useful FLOPs count the two matmuls, QK^T and PV, over the "
        "(query, key) pairs the pattern attends: 4·batch·heads·head_dim·pairs for the forward "
        "pass, and 2.5× that again for the backward pass. Pairs are exact for full attention, "
        "windows, dilation, global tokens and blocks; for Reformer they are the expected pairs "
        "(2 chunks per query per hash round). See `harness/measure/flops.py`."
    )
    if peak:
        text += (
            f" In brackets: the fraction of this GPU's dense half-precision peak, {peak:g} TFLOP/s."
        )
    blocks: list[Block] = [Heading("Achieved FLOP rate"), Text(text)]
    for facet, rows in grid.facets(df):
        blocks.append(Table(rate_table(rows, facet.pass_), f"TFLOP/s, {facet_title(facet)}"))
    return blocks


def _setup_section(df: pd.DataFrame) -> list[Block]:
    if "prepare_ms" not in df.columns or df["prepare_ms"].isna().all():
        return []  # a run from before these were recorded
    blocks: list[Block] = [
        Heading("Setup costs"),
        Text(
            "What a user pays besides the timed call: **prepare**, the per-shape setup done "
            "once outside the timed region (index tables, BlockMasks), then the **first call**, "
            "which includes lazy initialisation and any compilation (never part of the timed "
            "samples; warm-up goes on until two calls in a row agree, by default within 20%)."
        ),
    ]
    for facet, rows in grid.facets(df):
        caption = f"prepare / first call, {facet_title(facet)}"
        blocks.append(Table(setup_table(rows, facet.pass_), caption))
    return blocks


def _family_glance(df: pd.DataFrame) -> list[Block]:
    table = glance_table(df)
    if table.empty:
        return []
    return [
        Text(
            "**Fastest implementation of each pattern**: per pattern (a family and the values "
            "of its parameters, named by those that differ within the run; computed by our "
            "backends and by peers' packages) and length, its fastest implementation, and "
            "against it the fastest of the other side (the fastest peer where ours is fastest, "
            "our fastest where a peer is; the pattern's runner-up where it has no peer), with "
            "how many times its time and its peak memory were the fastest's."
        ),
        Table(table),
    ]


def _family_section(df: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [
        Heading("Families: ours beside the peers"),
        Text(
            "Each family's implementations side by side, ours first, then the peers' (the "
            "`implementation` column: ours, or the package a peer backend drives). Each cell: "
            "median time · peak memory beyond the inputs · relative error against exact full "
            "attention on the same inputs; a status where the case did not finish."
        ),
    ]
    for family, table in family_tables(df):
        blocks.append(Table(table, f"**{family}**"))
    return blocks


def _accuracy_section(df: pd.DataFrame, meta: dict) -> list[Block]:
    own = accuracy_table(df)
    if own.empty:
        return []
    return [
        Heading("Accuracy"),
        Text(
            "**Against the backend's own pattern**: the largest absolute difference between its "
            "output and dense softmax attention restricted to its own mask, over all lengths "
            "(the check run with every case on sampled query rows). It must be at rounding "
            "level: a larger one marks the case CHECK FAILED."
        ),
        Table(own),
        Text(
            "**Against full attention**: the relative error ‖out − full‖ / ‖full‖ of each "
            "backend's output against exact full attention on the same inputs (sampled query "
            "rows), family by family, on each input distribution of the run. This is what the "
            "pattern or approximation costs, not a bug. On Gaussian inputs it is large by "
            "construction: q, k and v are independent random numbers, so full attention spreads "
            "its weight almost evenly and averages n random values (norm ∝ 1/√n), while a "
            "pattern that attends k keys averages k of them (norm ∝ 1/√k); the relative error "
            "grows like √(n/k), above 1 once n > 2k. Trained models concentrate attention on "
            "neighbours and a few heavy-hitter keys, which the structured inputs imitate "
            "(`--inputs structured`); measure on your own activations before drawing "
            "conclusions about quality."
        ),
        Table(error_table(df)),
        Bullets(tuple(inputs_notes(df, meta))),
    ]


def _failure_section(df: pd.DataFrame) -> list[Block]:
    table = failure_table(df)
    if table.empty:
        return [Heading("Cases not measured"), Text("None: every case ran and finished.")]
    return [
        Heading("Cases not measured"),
        Text(
            "Skipped cases did not run (unsupported, or predicted not to fit); the others ran "
            "and did not finish."
        ),
        Table(table),
    ]


def write(run_dir: Path) -> Path:
    """Writes the report files into ``run_dir``; returns the Markdown report's path."""
    run_dir = Path(run_dir)
    blocks, figures = build(run_dir)
    with runs.writing(run_dir):
        for path, fig in figures:
            plots.save(fig, path)
        (run_dir / REPORT_MD).write_text(to_markdown(blocks))
        (run_dir / REPORT_HTML).write_text(to_html(blocks, f"attention-bench: {run_dir.name}"))
    return run_dir / REPORT_MD
