"""``run_bench.py compare`` and ``baseline``: the verdicts of one run against another.

``compare BASELINE NEW`` judges every case the runs share (``harness.analyse.regression``), prints
the table and writes it as ``compare.md`` and ``compare.csv`` into the new run (or ``--out``); its
outcome (``regression.outcome``) gives the exit code: a regression, a case that could not be
decided (``inconclusive``), or neither. With ``normalise`` times are divided by the reference
operation (``harness.measure.calibration``) timed next to each case, or by the run's where a run
lacks those, so that a baseline recorded on one day compares fairly with a run on another.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analyse import grid, regression
from harness.analyse.rules import CompareSettings, Outcome, Verdict
from harness.present import text_table
from harness.present.facets import point_title
from harness.present.plots import length_text
from harness.present.summary import fmt_bytes, fmt_ms
from harness.store import runs, storage
from harness.store.records import METRICS, Status

COMPARE_MD, COMPARE_CSV = "compare.md", "compare.csv"
EXIT_CODES = {Outcome.PASSED: 0, Outcome.REGRESSED: 1, Outcome.INCONCLUSIVE: 3}  # 2: bad input
METRIC_TEXT = {"wall": "wall time", "cpu": "CPU time"}


def _run_calibrations(
    meta_base: dict, meta_new: dict, settings: CompareSettings
) -> tuple[float | None, float | None]:
    base = runs.calibration_ms(meta_base, settings.metric)
    new = runs.calibration_ms(meta_new, settings.metric)
    if settings.normalise and (base is None or new is None):
        which = "baseline" if base is None else "new run"
        raise storage.RunFolderError(
            f"--normalise: the {which} has no calibration {METRIC_TEXT[settings.metric]} "
            "(recorded before runs had one); compare without --normalise"
        )
    return base, new


def _require_metric(df, run_dir: Path, metric: str) -> None:
    column = METRICS[metric].median
    ok = df[df["status"] == Status.OK]
    if not ok.empty and (column not in ok.columns or ok[column].isna().all()):
        raise storage.RunFolderError(
            f"{run_dir}: no {METRIC_TEXT[metric]} was recorded (a CUDA run, or one made before "
            f"the harness recorded it): compare with --metric wall"
        )


def few_processes(df) -> bool:
    """Fewer than 3 processes per measured case: no per-process significance test."""
    column = METRICS["wall"].process_medians
    ok = df[df["status"] == Status.OK]
    if ok.empty or column not in ok.columns:
        return not ok.empty
    return bool((ok[column].map(lambda t: len(str(t).split())) < 3).any())


def _time(ms: object) -> str:
    return fmt_ms(float(ms)) if pd.notna(ms) else ""


def _side(times: pd.Series, statuses: pd.Series) -> list[str]:
    """A side's median time, or its status where it did not finish, or nothing (no such case)."""
    return [
        "" if pd.isna(s) else _time(t) if s == Status.OK else str(s)
        for t, s in zip(times, statuses, strict=True)
    ]


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    """Each case's cells as text, under short names (the terminal's headers)."""
    return pd.DataFrame(
        {
            "verdict": table["verdict"],
            "backend": table["backend"],
            "pass": table["pass"],
            "n": table["seq_len"].map(length_text),
            "base": _side(table["time_base_ms"], table["status_base"]),
            "new": _side(table["time_new_ms"], table["status_new"]),
            "ratio": table["time_ratio"].map(lambda r: f"{r:.3g}×" if pd.notna(r) else ""),
            "mem new": table["memory_new"].map(lambda b: fmt_bytes(b) if pd.notna(b) else ""),
            "why": table["why"],
        },
        index=table.index,
    )


def display_table(table: pd.DataFrame, settings: CompareSettings | None = None) -> pd.DataFrame:
    """The verdicts for people (compare.md): case, both sides (medians of the judged time, as
    measured), the ratio that was judged (normalised where it was), verdict, why."""
    settings = settings or CompareSettings()
    what = METRIC_TEXT[settings.metric]
    ratio = f"ratio ({what}, normalised)" if settings.normalise else f"ratio ({what})"
    headers = {"backend": "backend", "pass": "pass", "n": "n", "base": f"baseline ({what})",
               "new": f"new ({what})", "ratio": ratio, "mem new": "memory new",
               "verdict": "verdict", "why": "why"}  # fmt: skip
    shown = _cells(table)[list(headers)].rename(columns=headers).reset_index(drop=True)
    axes = grid.varying_grid_axes(table)  # a grid run: each case's point, a column per axis
    for i, axis in enumerate(axes):
        shown.insert(3 + i, axis, grid.facet_values(table, axis).astype(str).to_numpy())
    return shown


# the order in which the terminal lists the cases: what needs attention first
ATTENTION = [Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.SLOWER, Verdict.UNMEASURED,
             Verdict.FIXED, Verdict.FASTER, Verdict.SAME, Verdict.LEANER, Verdict.NEW,
             Verdict.MISSING]  # fmt: skip
TERMINAL_WIDTH = 120


def by_attention(table: pd.DataFrame) -> pd.DataFrame:
    """The rows, regressed first, then inconclusive, slower, unmeasured, fixed, faster, same,
    new, missing (``ATTENTION``); in the run's order within a verdict."""
    rank = table["verdict"].map({str(v): i for i, v in enumerate(ATTENTION)})
    return table.iloc[rank.fillna(len(ATTENTION)).to_numpy().argsort(kind="stable")]


def terminal_table(
    table: pd.DataFrame, settings: CompareSettings | None = None, width: int = TERMINAL_WIDTH
) -> str:
    """The verdicts for a terminal: the same cells as ``display_table`` (compare.md), the verdict
    first, the cases that need attention first (``by_attention``), short headers explained in a
    line above, no line longer than ``width``; for a grid run, a table per point of the grid
    (its title above it), the points in the order their first case needs attention. Long
    labels wrap in their column; the reasons (``why``) wrap in theirs, or, where that takes
    fewer lines (long reasons), under each case."""
    settings = settings or CompareSettings()
    what = METRIC_TEXT[settings.metric]
    normalised = ", normalised by the calibration" if settings.normalise else ""
    legend = (
        f"base, new: median {what} per call, as measured; ratio: new / base of the {what} "
        f"judged{normalised}; mem new: peak memory of the new run"
    )
    ordered = by_attention(table)
    axes = grid.varying_grid_axes(table)
    tables = []
    for point, cases in grid.points(ordered, axes):  # a grid: a table per point, as first needed
        title = point_title(zip(axes, point, strict=True))
        tables.append(([f"{title}:"] if axes else []) + [_fit(_cells(cases), width)])
    return (
        "\n".join(textwrap.wrap(legend, width)) + "\n\n" + "\n\n".join("\n".join(t) for t in tables)
    )


def _fit(cells: pd.DataFrame, width: int) -> str:
    """The cells in ``width`` columns: the reasons in their column, or, where that takes fewer
    lines (long reasons), under each case."""
    right = ("n", "base", "new", "ratio", "mem new")
    beside = text_table.fit(cells, width, right, wrap=("backend", "why"))
    under = text_table.fit(cells, width, right, wrap=("backend",), below="why")
    return under if under.count("\n") < beside.count("\n") else beside


@dataclass(frozen=True)
class Comparison:
    table: pd.DataFrame  # one row per case: both sides, ratio, verdict, why
    outcome: Outcome  # ``regression.outcome``
    path: Path  # compare.md (compare.csv beside it)
    thin: tuple[Path, ...]  # the runs that timed cases in fewer than 3 processes


def compare(
    base_dir: Path, new_dir: Path, settings: CompareSettings, out: Path | None = None
) -> Comparison:
    """Judges ``new_dir`` against ``base_dir`` and writes compare.md and compare.csv."""
    (base, meta_base), (new, meta_new) = runs.load_run(base_dir), runs.load_run(new_dir)
    for df, run_dir in ((base, base_dir), (new, new_dir)):
        _require_metric(df, run_dir, settings.metric)
    refs = _run_calibrations(meta_base, meta_new, settings)
    table = regression.compare_runs(base, new, settings, refs)
    shared = ~table["verdict"].isin([Verdict.NEW, Verdict.MISSING])
    if not shared.any():
        raise storage.RunFolderError(f"{base_dir} and {new_dir} have no case in common")
    out = Path(out) if out else Path(new_dir)
    with runs.writing(out):
        table.to_csv(out / COMPARE_CSV, index=False)
    tol = settings.tolerances
    dev = str(table["device"].dropna().iloc[0]) if table["device"].notna().any() else "cpu"
    counts = table["verdict"].value_counts()
    what = METRIC_TEXT[settings.metric]
    head = (
        f"# Regression check: {Path(new_dir).name} against {Path(base_dir).name}\n\n"
        f"Judged on {what} per call. Time tolerance {tol.time:.0%} (and significant: "
        f"Mann-Whitney p < {tol.alpha}, bootstrap 95% interval of the median ratio above 1); "
        f"memory tolerance {tol.memory:.0%} on CUDA, max({tol.cpu_memory:.0%}, "
        f"{fmt_bytes(tol.cpu_memory_floor_bytes)}) on CPU"
        + (f"; ratios normalised by the calibration ({_calibration_text(meta_new, dev)}): "
           "the time measured in each case's process where both runs have it, else the run's "
           f"({refs[0]:.3g} ms in the baseline, {refs[1]:.3g} ms in the new run); the times "
           "shown are as measured"
           if settings.normalise else "")
        + ". A case measured under unstable conditions is `inconclusive`"
        + (" (strict: judged anyway, the conditions named)" if settings.strict else "")
        + ": see the README, \"How stable is a number\".\n\n"
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + "\n\n"
    )  # fmt: skip
    body = display_table(table, settings).to_markdown(index=False)
    with runs.writing(out):
        (out / COMPARE_MD).write_text(head + body + "\n")
    thin = tuple(Path(d) for d, df in ((base_dir, base), (new_dir, new)) if few_processes(df))
    return Comparison(table, regression.outcome(table), out / COMPARE_MD, thin)


def _calibration_text(meta: dict, device: str) -> str:
    """What the calibration is, as the run recorded it."""
    recorded = (meta.get("calibration") or {}).get("before", {}).get("op")
    return str(recorded) if recorded else f"the run's calibration matmul on {device}"
