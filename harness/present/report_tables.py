"""The report's tables as DataFrames of display strings, one function per table.

A time that may not be believed (``harness.analyse.stability``) carries ⚠ in its cell;
``unstable_notes`` gives the lines that say why, for below the table.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.analyse import analysis, stability
from harness.present.plots import PASS_TITLES, length_text
from harness.present.summary import fmt_bytes, fmt_ms
from harness.store.records import CHECK_FAILED, FAILED, Status, check_failed, check_tolerance


def _cell_status(row: pd.Series) -> str | None:
    if row["status"] == Status.OK:
        return None
    return "OOM" if row["status"] == Status.OOM else str(row["status"])


def _pivot(df: pd.DataFrame, pass_: str, cell) -> pd.DataFrame:
    rows = df[df["pass"] == pass_]
    cells = rows.assign(cell=rows.apply(cell, axis=1))
    table = cells.pivot_table(
        index="label", columns="seq_len", values="cell", aggfunc="last", sort=False
    ).fillna("")
    table = table[sorted(table.columns)]
    table.columns = [length_text(c) for c in table.columns]
    return table.reset_index().rename(columns={"label": "backend"})


def _mark(r: pd.Series, run_calibration_ms: float | None) -> str:
    return (
        f" {stability.MARK}"
        if stability.row_warnings(r, run_calibration_ms=run_calibration_ms)
        else ""
    )


def metric_table(
    df: pd.DataFrame, pass_: str, metric: str, run_calibration_ms: float | None = None
) -> pd.DataFrame:
    """Backend x length of median time ± IQR (``metric`` "time"; an unstable case marked, judged
    against the run's calibration time ``run_calibration_ms``) or of peak memory ("memory")."""

    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status:
            return status
        if metric == "time":
            text = f"{fmt_ms(r['time_median_ms'])} ± {fmt_ms(r['time_iqr_ms'], 2)}"
            return text + _mark(r, run_calibration_ms)
        return fmt_bytes(r["peak_mem_bytes"]) if pd.notna(r["peak_mem_bytes"]) else ""

    return _pivot(df, pass_, cell)


def unstable_notes(
    df: pd.DataFrame, pass_: str, run_calibration_ms: float | None = None
) -> list[str]:
    """One line per case of ``pass_`` marked in its time table: the stability rules that fired."""
    rows = analysis.latest(df[df["pass"] == pass_])
    # in the table's order: backends as they first appear, each by length
    order = {label: i for i, label in enumerate(dict.fromkeys(rows["label"]))}
    rows = rows.assign(_order=rows["label"].map(order)).sort_values(["_order", "seq_len"])
    return stability.notes(
        [
            (
                f"{r['label']} at {length_text(r['seq_len'])}",
                stability.row_warnings(r, run_calibration_ms=run_calibration_ms),
            )
            for _, r in rows.iterrows()
        ]
    )


def rate_table(df: pd.DataFrame, pass_: str) -> pd.DataFrame:
    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status or pd.isna(r["tflops"]):
            return status or ""
        text = f"{r['tflops']:.3g}"
        if pd.notna(r.get("peak_fraction")):
            text += f" ({r['peak_fraction']:.0%})"
        return text

    return _pivot(df, pass_, cell)


def setup_table(df: pd.DataFrame, pass_: str) -> pd.DataFrame:
    def cell(r: pd.Series) -> str:
        status = _cell_status(r)
        if status or pd.isna(r.get("prepare_ms")):
            return status or ""
        return f"{fmt_ms(r['prepare_ms'], 2)} / {fmt_ms(r['first_call_ms'], 2)}"

    return _pivot(df, pass_, cell)


def context_table(meta: dict) -> pd.DataFrame:
    config = meta.get("config", {})
    timing = config.get("timing", {})
    items = [
        ("device", f"{meta.get('device', '')}: {meta.get('device_name', '')}"),
        (
            "CPU",
            f"{meta.get('cpu', '')} ({meta.get('cpu_count', '?')} cores, "
            f"{meta.get('threads', '?')} threads used)",
        ),
        (
            "versions",
            ", ".join(
                f"{k} {meta[k]}"
                for k in ("python", "torch", "cuda", "xformers", "pandas")
                if meta.get(k)
            ),
        ),
        ("platform", meta.get("platform", "")),
        ("commit", meta.get("git_commit", "")),
        ("date", meta.get("created", "")),
        ("command", f"`{meta.get('command', '')}`"),
        (
            "shape",
            f"batch {config.get('batch')}, heads {config.get('heads')}, head_dim "
            f"{config.get('head_dim')}, {config.get('dtype')}, seed {config.get('seed')}",
        ),
        (
            "timing",
            f"warm-up {timing.get('warmup_s')} s, then at least {timing.get('min_repeats')}"
            f" samples and {timing.get('min_time_s')} s per case; case timeout "
            f"{config.get('case_timeout_s')} s",
        ),
    ]
    for resumed in meta.get("resumed", []):
        items.append(("resumed", f"{resumed.get('created', '')}: `{resumed.get('command', '')}`"))
    return pd.DataFrame(items, columns=["", "value"])


def glance(df: pd.DataFrame, run_calibration_ms: float | None = None) -> list[str]:
    """One line per pass: who is fastest and leanest at the longest length where at least two
    backends finished (one alone is no comparison); an unstable time marked as in the tables."""
    lines = []
    for pass_, g in df.groupby("pass", sort=False):
        ok = analysis.measured(g)
        if ok.empty:
            continue
        counts = ok["seq_len"].value_counts()
        n = max(counts.index[counts >= min(2, counts.max())])
        at = ok[ok["seq_len"] == n]
        fast = at.loc[at["time_median_ms"].idxmin()]
        lean = at.loc[at["peak_mem_bytes"].idxmin()] if at["peak_mem_bytes"].notna().any() else None
        text = (
            f"{PASS_TITLES.get(pass_, pass_)} at n = {length_text(n)}: fastest **{fast['label']}**"
            f" ({fmt_ms(fast['time_median_ms'])}{_mark(fast, run_calibration_ms)})"
        )
        full = at[~at["sparse"].astype(bool)]
        if not full.empty and bool(fast["sparse"]):
            best_full = full.loc[full["time_median_ms"].idxmin()]
            ratio = best_full["time_median_ms"] / fast["time_median_ms"]
            text += f", {ratio:.3g}× faster than {best_full['label']}"
        if lean is not None:
            text += f"; least memory **{lean['label']}** ({fmt_bytes(lean['peak_mem_bytes'])})"
        failed = g[g["status"].isin(FAILED)]
        if not failed.empty:
            text += "; did not finish: " + ", ".join(
                f"{r['label']} at {length_text(r['seq_len'])} ({r['status']})"
                for _, r in failed.iterrows()
            )
        lines.append(text + ".")
    return lines or ["No case finished."]


def glance_crossovers(cross: pd.DataFrame) -> list[str]:
    """One line per pass and full-attention reference: where each sparse backend pays off."""
    lines = []
    for (pass_, ref), g in cross.groupby(["pass", "reference"], sort=False):
        parts = [
            f"{backend_name(r['label'])} {_short(r['time'], 'faster')}, "
            f"{_short(r['memory'], 'less memory')}"
            for _, r in g.iterrows()
        ]
        lines.append(f"{PASS_TITLES.get(pass_, pass_)}, against {ref}: " + "; ".join(parts) + ".")
    return lines


def backend_name(label: str) -> str:
    return label.split("(")[0]


def _short(c: analysis.Crossover, what: str) -> str:
    if c.first is None:
        return f"never {what}" if c.lengths else f"{what}: not compared"
    if c.first == c.lengths[0]:
        return f"{what} at every length"
    return f"{what} from {length_text(c.first)}"


def _fit(fit: analysis.Fit | None) -> str:
    return fit.text() if fit is not None else "–"


def _span(fit: analysis.Fit | None) -> str:
    return f"{length_text(fit.lengths[0])}–{length_text(fit.lengths[1])}" if fit else ""


def exponent_table(exps: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, e in exps.iterrows():
        promised = "" if e["promised"] is None or pd.isna(e["promised"]) else e["promised"]
        rows.append(
            {
                "backend": e["label"],
                "pass": e["pass"],
                "time exponent": _fit(e["time"]),
                "time, 3 longest": _fit(e["time_tail"]),
                "memory exponent": _fit(e["memory"]) + (" ⚠" if e["flag"] else ""),
                "memory, 3 longest": _fit(e["memory_tail"]),
                "promise": f"{e['promise']} → {promised:.2f}"
                if promised != ""
                else e["promise"] or "unknown",
                "lengths": _span(e["time"]),
            }
        )
    return pd.DataFrame(rows)


def crossover_table(cross: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "backend": cross["label"],
            "pass": cross["pass"],
            "against": cross["reference"],
            "faster from n =": [c.text() for c in cross["time"]],
            "less memory from n =": [c.text() for c in cross["memory"]],
        }
    )


def accuracy_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ok = analysis.measured(df)
    rows = []
    for (label, pass_), g in ok.groupby(["label", "pass"], sort=False):
        worst = g["max_err"].max()
        tol = check_tolerance(str(g["dtype"].iloc[0]))
        failed = g["reason"].map(check_failed).sum()
        verdict = CHECK_FAILED if failed else ("within" if worst <= tol else "above")
        rows.append(
            {
                "backend": label,
                "pass": pass_,
                "max error vs own mask": "" if pd.isna(worst) else f"{worst:.2g}",
                "tolerance": f"{tol:g}",
                "verdict": verdict if not math.isnan(worst) else "",
            }
        )
    own = pd.DataFrame(rows)
    fwd = ok[ok["pass"] == ok["pass"].iloc[0]] if not ok.empty else ok
    vs_full = pd.DataFrame()
    if not fwd.empty:
        vs_full = _pivot(
            fwd,
            fwd["pass"].iloc[0],
            lambda r: "" if pd.isna(r["err_vs_full"]) else f"{r['err_vs_full']:.2g}",
        )
    return own, vs_full


def failure_table(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != Status.OK]
    return pd.DataFrame(
        {
            "backend": bad["label"],
            "pass": bad["pass"],
            "n": bad["seq_len"].map(length_text),
            "status": bad["status"],
            "reason": bad["reason"].astype(str).str.slice(0, 160),
        }
    )
