"""``run_bench.py compare`` and ``baseline``: the regression check of one run against another.

``compare BASELINE NEW`` judges every case the runs share (``harness.regression``), prints the
table, writes it as ``compare.md`` and ``compare.csv`` into the new run (or ``--out``) and
returns exit code 1 when a case regressed, 0 otherwise. With ``normalise`` times are divided by
the reference operation (``harness.reference_op``) timed next to each case, or by the run's
where a run lacks those, so that a baseline recorded on one day compares fairly with a run on
another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import reference_op, regression, storage
from harness.plots import length_text
from harness.summary import fmt_bytes, fmt_ms

COMPARE_MD, COMPARE_CSV = "compare.md", "compare.csv"


@dataclass(frozen=True)
class CheckSettings:
    tolerances: regression.Tolerances = field(default_factory=regression.Tolerances)
    normalise: bool = False


def _scales(meta_base: dict, meta_new: dict, normalise: bool) -> tuple[float, float] | None:
    if not normalise:
        return None
    base, new = reference_op.reference_ms(meta_base), reference_op.reference_ms(meta_new)
    if base is None or new is None:
        which = "baseline" if base is None else "new run"
        raise storage.RunFolderError(
            f"--normalise: the {which} has no reference-operation time (recorded before runs "
            "had one); compare without --normalise"
        )
    return base, new


def _time(ms: object) -> str:
    return fmt_ms(float(ms)) if pd.notna(ms) else ""


def _side(times: pd.Series, statuses: pd.Series) -> list[str]:
    """A side's median time, or its status where it did not finish, or nothing (no such case)."""
    return [
        "" if pd.isna(s) else _time(t) if s == "ok" else str(s)
        for t, s in zip(times, statuses, strict=True)
    ]


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts for people: case, both sides, ratio, verdict, why."""
    return pd.DataFrame(
        {
            "backend": table["backend"],
            "pass": table["pass"],
            "n": table["seq_len"].map(length_text),
            "baseline": _side(table["time_base_ms"], table["status_base"]),
            "new": _side(table["time_new_ms"], table["status_new"]),
            "time ratio": table["time_ratio"].map(lambda r: f"{r:.3g}×" if pd.notna(r) else ""),
            "memory new": table["memory_new"].map(lambda b: fmt_bytes(b) if pd.notna(b) else ""),
            "verdict": table["verdict"],
            "why": table["why"],
        }
    )


def compare(base_dir: Path, new_dir: Path, settings: CheckSettings, out: Path | None = None):
    """Judges ``new_dir`` against ``base_dir``; returns (table, whether anything regressed,
    the Markdown path)."""
    base, new = storage.read_results(base_dir), storage.read_results(new_dir)
    meta_base, meta_new = storage.read_meta(base_dir), storage.read_meta(new_dir)
    scales = _scales(meta_base, meta_new, settings.normalise)
    table = regression.compare_runs(base, new, settings.tolerances, scales)
    shared = ~table["verdict"].isin(["new", "missing"])
    if not shared.any():
        raise storage.RunFolderError(f"{base_dir} and {new_dir} have no case in common")
    out = Path(out) if out else Path(new_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / COMPARE_CSV, index=False)
    tol = settings.tolerances
    dev = str(table["device"].dropna().iloc[0]) if table["device"].notna().any() else "cpu"
    counts = table["verdict"].value_counts()
    head = (
        f"# Regression check: {Path(new_dir).name} against {Path(base_dir).name}\n\n"
        f"Time tolerance {tol.time:.0%} (and significant: Mann-Whitney p < {tol.alpha}, "
        f"bootstrap 95% interval of the median ratio above 1); memory tolerance "
        f"{tol.memory:.0%} on CUDA, max({tol.cpu_memory:.0%}, "
        f"{fmt_bytes(tol.cpu_memory_floor_bytes)}) on CPU"
        + (f"; times normalised by the reference operation ({reference_op.describe(dev)}): "
           "the time measured in each case's process where both runs have it, else the run's "
           f"({scales[0]:.3g} ms in the baseline, {scales[1]:.3g} ms in the new run)"
           if scales else "")
        + ".\n\n"
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + "\n\n"
    )  # fmt: skip
    (out / COMPARE_MD).write_text(head + display_table(table).to_markdown(index=False) + "\n")
    return table, regression.regressed(table), out / COMPARE_MD
