"""``gpu-check.md``: the summary of a GPU check's folder (``run_bench.py gpu-check``), written
from its stored files alone (``gpu-check.json``, the run folders ``sanity-d*`` and ``sweep``), so
that it can be written again, here, from a folder brought back from a lent machine.

Sections: the environment; each stage's outcome and seconds; SDPA-flash's rate at 16K beside
FlashAttention-2's published range; the sweep's coverage, how far each backend got, each sparse
family's best rate as a fraction of SDPA-flash's, memory exponents from 8K, and where full-naive
ran out of memory; the backends and why some cannot run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.analyse import gpu_figures
from harness.analyse.analysis import latest
from harness.analyse.published import FLASH_ATTENTION_2_FORWARD
from harness.present.document import Block, Heading, Table, Text, to_markdown
from harness.present.plots import length_text
from harness.store import runs, storage
from harness.store.records import Status, check_failed

SUMMARY = "gpu-check.md"
CHECK_FILE = "gpu-check.json"  # the stages and environment, written by harness.cli.gpu_check
FRACTION_AT = 16384
MEMORY_FROM = 8192
NAIVE = "full-naive"


def _rows(folder: Path) -> pd.DataFrame | None:
    try:
        return latest(runs.load_run(folder)[0])
    except Exception:  # no run there (a stage that did not run): said in the stage table
        return None


def _environment(state: dict) -> list[Block]:
    env = state.get("environment", {})
    versions = [
        f"torch {env.get('torch')} (CUDA {env.get('cuda')})",
        f"Python {env.get('python')}",
        f"triton: {env.get('triton')}",
        f"xformers: {env.get('xformers')}",
        f"commit {env.get('git_commit') or 'unknown'}",
    ]
    if env.get("gpu_memory_gib"):
        versions.insert(0, f"{env['gpu_memory_gib']} GiB, {env.get('multiprocessors')} SMs")
    dry = " (CPU dry run: no GPU figure below is a GPU's)" if state.get("dry_run") else ""
    return [
        Heading(f"GPU check: {env.get('device_name', '?')}{dry}", 1),
        Text("; ".join(versions) + f". Budget {state.get('budget_s', 0):g} s."),
    ]


def _stages(state: dict) -> list[Block]:
    blocks: list[Block] = [Heading("Stages")]
    for i, attempt in enumerate(state.get("attempts", []), 1):
        frame = pd.DataFrame(attempt["stages"], columns=["name", "status", "seconds", "detail"])
        frame["seconds"] = frame["seconds"].map(lambda s: f"{s:.0f}")
        caption = f"Attempt {i}, {attempt['started']}: `{' '.join(attempt['command'])}`"
        blocks.append(Table(frame.rename(columns={"name": "stage"}), caption))
    return blocks


def _sanity(out: Path) -> list[Block]:
    rows, lengths = [], set()
    for head_dim, published in FLASH_ATTENTION_2_FORWARD.items():
        df = _rows(out / f"sanity-d{head_dim}")
        if df is None or df.empty:
            rows.append([head_dim, "not run", published.text(), ""])
            continue
        row = df.iloc[0]
        lengths.add(int(row["seq_len"]))
        rate = gpu_figures.rate(row)
        if rate is None:
            rows.append([head_dim, f"{row['status']}: {row['reason']}", published.text(), ""])
        else:
            rows.append([head_dim, rate.text(), published.text(), published.place(rate.median)])
    frame = pd.DataFrame(rows, columns=["head_dim", "sdpa-flash", "published", "where"])
    return [
        Heading(f"SDPA flash forward at {' and '.join(map(length_text, sorted(lengths))) or '-'}"),
        Text(
            "bfloat16, batch 1, 16 heads, non-causal; useful TFLOP/s counted as "
            "FlashAttention's benchmarks count them (4 B H N² D per forward)."
        ),
        Table(frame),
    ]


def _coverage(df: pd.DataFrame, meta: dict) -> Text:
    counts = df["status"].value_counts()
    checks = int(df["reason"].map(check_failed).sum())
    parts = [f"{int(counts.get(s, 0))} {s}" for s in Status if counts.get(s, 0)]
    left = meta.get("time_budget", {}).get("cases_not_run", 0)
    text = f"{len(df)} cases: {', '.join(parts)}"
    text += f"; {checks} failed their output check" if checks else "; every output check passed"
    return Text(text + (f"; {left} not run (the budget was spent)." if left else "."))


def _reach(df: pd.DataFrame) -> pd.DataFrame:
    """Per backend and pass: the longest length measured, and what stopped it there."""
    rows = []
    for (label, pass_), g in df.groupby(["label", "pass"], sort=False):
        ok = g[g["status"] == Status.OK]
        longest = int(ok["seq_len"].max()) if len(ok) else None
        beyond = g[(g["status"] != Status.OK) & (g["seq_len"] > (longest or 0))]
        beyond = beyond.sort_values("seq_len")
        stop = ""
        if not beyond.empty:
            first = beyond.iloc[0]
            stop = f"{first['status']} at {length_text(first['seq_len'])}: {first['reason']}"[:100]
        rows.append([label, pass_, length_text(longest) if longest else "-", stop])
    return pd.DataFrame(rows, columns=["backend", "pass", "longest measured", "then"])


def _fractions(df: pd.DataFrame) -> Table:
    table = gpu_figures.best_fractions(df, FRACTION_AT)
    shown = table.assign(
        seq_len=table["seq_len"].map(length_text),
        tflops=table["tflops"].map(lambda x: f"{x:.3g}"),
        yardstick=table["yardstick"].map(lambda x: "-" if pd.isna(x) else f"{x:.3g}"),
        fraction=table["fraction"].map(lambda x: "-" if pd.isna(x) else f"{x:.2f}"),
    ).drop(columns=["where"])
    caption = (
        f"Each sparse family's fastest implementation, in useful TFLOP/s, against "
        f"{gpu_figures.YARDSTICK} at {length_text(FRACTION_AT)} and at the longest length the "
        "family reached ('-': no trusted sdpa-flash row there)."
    )
    return Table(shown.rename(columns={"tflops": "TFLOP/s", "yardstick": "sdpa-flash"}), caption)


def _memory(df: pd.DataFrame) -> Table:
    table = gpu_figures.memory_exponents(df, MEMORY_FROM)
    table["exponent"] = table["fit"].map(lambda f: f.text() if f else "fewer than 2 lengths")
    table["lengths"] = table["fit"].map(
        lambda f: f"{length_text(f.lengths[0])}-{length_text(f.lengths[1])}" if f else ""
    )
    caption = f"Peak memory's log-log slope over the lengths from {length_text(MEMORY_FROM)} on."
    return Table(table.drop(columns=["fit"]).rename(columns={"label": "backend"}), caption)


def _naive(df: pd.DataFrame) -> Text:
    limits = gpu_figures.memory_limit(df, NAIVE)
    if not limits:
        return Text(f"{NAIVE} was not in the sweep.")
    said = [
        f"{pass_}: {'no limit reached' if hit is None else f'{hit[1]} at {length_text(hit[0])}'}"
        for pass_, hit in limits.items()
    ]
    return Text(f"{NAIVE}'s memory limit: {'; '.join(said)}.")


def _sweep(out: Path) -> list[Block]:
    folder = out / "sweep"
    df = _rows(folder)
    if df is None:
        return [Heading("Sweep"), Text("No sweep results.")]
    meta = storage.read_meta(folder)  # the rows are read: the meta alone now
    config = meta.get("config", {})
    lengths = config.get("lengths", [])
    what = (
        (
            f"{config.get('dtype')}, batch {config.get('batch')}, {config.get('heads')} heads, "
            f"head_dim {config.get('head_dim')}, lengths {length_text(min(lengths))} to "
            f"{length_text(max(lengths))}; report: sweep/report.md."
        )
        if lengths
        else ""
    )
    return [
        Heading("Sweep"),
        Text(what),
        _coverage(df, meta),
        Table(_reach(df), "How far each backend got."),
        _fractions(df),
        _memory(df),
        _naive(df),
    ]


def _backends(state: dict) -> list[Block]:
    table = pd.DataFrame(state.get("environment", {}).get("backends", []))
    if table.empty:
        return []
    runs_here = [c for c in table.columns if c.startswith("runs here")]
    table = table[["backend", *runs_here, "why not"]]
    return [Heading("Backends here"), Table(table)]


def write(out: Path) -> Path:
    """Write ``out/gpu-check.md`` from the folder's stored files; returns its path."""
    state = json.loads((out / CHECK_FILE).read_text())
    blocks = [*_environment(state), *_stages(state), *_sanity(out), *_sweep(out), *_backends(state)]
    path = out / SUMMARY
    path.write_text(to_markdown(blocks))
    return path


def headline(out: Path) -> str:
    """A few lines for the end of the check's output (a lent machine's reply keeps only the
    end): the stages, the sanity rates, the sparse families' fractions, full-naive's limit."""
    state = json.loads((out / CHECK_FILE).read_text())
    stages = state["attempts"][-1]["stages"]
    lines = [f"GPU check of {state['environment'].get('device_name')} in {out} ({SUMMARY} has "
             "the rest)",
             "stages: " + "; ".join(f"{s['name']} {s['status']} in {s['seconds']:.0f} s"
                                    + (f" ({s['detail']})" if s["detail"] else "")
                                    for s in stages)]  # fmt: skip
    for head_dim, published in FLASH_ATTENTION_2_FORWARD.items():
        df = _rows(out / f"sanity-d{head_dim}")
        row = None if df is None or df.empty else df.iloc[0]
        rate = None if row is None else gpu_figures.rate(row)
        said = "not run" if row is None else (
            f"{row['status']}: {row['reason']}"[:120] if rate is None
            else f"{rate.text()}; FlashAttention-2 {published.low:g}-{published.high:g}: "
                 f"{published.place(rate.median)}")  # fmt: skip
        lines.append(f"sdpa-flash fwd, head_dim {head_dim}: {said}")
    sweep = _rows(out / "sweep")
    if sweep is not None:
        table = gpu_figures.best_fractions(sweep, FRACTION_AT)
        parts = [f"{r['family']} {r['pass']} {length_text(r['seq_len'])} {r['fraction']:.2f}"
                 for _, r in table.iterrows() if pd.notna(r["fraction"])]  # fmt: skip
        lines.append("best sparse / sdpa-flash: " + ("; ".join(parts) or "none measured"))
        lines.append(_naive(sweep).text)
    return "\n".join(lines)


def case_outcomes(out: Path) -> tuple[int, int]:
    """Cases of the check's runs that raised or failed their output check, and cases that
    timed out (out of memory is a finding, not a failure)."""
    failed = timed_out = 0
    for folder in [out / "sweep", *sorted(out.glob("sanity-d*"))]:
        df = _rows(folder)
        if df is not None:
            failed += int(((df["status"] == Status.ERROR) | df["reason"].map(check_failed)).sum())
            timed_out += int((df["status"] == Status.TIMEOUT).sum())
    return failed, timed_out
