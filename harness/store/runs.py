"""The one check of a run folder that ``report``, ``compare`` and ``baseline save`` share, so
that a baseline can only be saved from a run that a report and a comparison can read, and where
their output goes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

import harness.store
from harness.store import storage
from harness.store.limits import MAX_LENGTHS
from harness.store.records import CASE_KEY, METRICS, has_facts

# what the tables, figures and verdicts read without a fallback; other columns may be missing
# (runs recorded before they existed)
NEEDED = [*CASE_KEY, "status", "label", "family", "reason", "time_median_ms", "time_iqr_ms",
          "peak_mem_bytes"]  # fmt: skip


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """The run's rows (every round) and meta; ``RunFolderError`` unless its results are
    readable, hold the columns reports and checks need and at least one case, and its meta is
    readable."""
    df = storage.read_results(run_dir)
    path = Path(run_dir) / storage.RESULTS
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise storage.RunFolderError(
            f"{path}: no column {', '.join(missing)} (not a results file of this harness?)"
        )
    if df.empty:
        raise storage.RunFolderError(f"{path}: holds no cases")
    lengths = df["seq_len"].nunique()
    if lengths > MAX_LENGTHS:  # a figure's and a table's time grow with them: minutes at 20,000
        raise storage.RunFolderError(
            f"{path}: {lengths} sequence lengths, more than the {MAX_LENGTHS} a sweep measures "
            "(not a run of this harness?)"
        )
    if not has_facts(df.columns):
        df = _upgraded(df, path)
    return df, storage.read_meta(run_dir)


def _upgraded(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A format-1 run's rows with their family facts filled in from the backends."""
    fill_facts = harness.store.fill_facts
    if fill_facts is None:
        raise storage.RunFolderError(
            f"{path}: a run of format 1, without its backends' facts; read it where the backends "
            "import (attention-bench upgrade RUN_DIR stores them)"
        )
    return fill_facts(df)


def matching_key(a: pd.DataFrame, b: pd.DataFrame, free: Iterable[str] = ()) -> list[str]:
    """The columns that match the cases of two runs: the case key (``records.CASE_KEY``), less
    the columns in ``free`` wherever each run holds a single value of them, so that runs that
    differ only there compare (a CPU run with a GPU run, for example)."""
    loose = {c for c in free if c in CASE_KEY and a[c].nunique() == 1 and b[c].nunique() == 1}
    return [c for c in CASE_KEY if c not in loose]


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[Path]:
    """Creates ``folder`` for output; a folder that cannot be created or written is bad input
    (``RunFolderError``), not a crash."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    except OSError as exc:
        where = exc.filename or folder
        raise storage.RunFolderError(f"cannot write to {where}: {exc.strerror or exc}") from None


def calibration_ms(meta: dict[str, Any], metric: str = "wall") -> float | None:
    """The run's calibration time (``metric``: "wall" or "cpu"): the mean of the medians measured
    before and after the sweep; None for a run recorded without one."""
    ref = meta.get("calibration") or {}
    key = METRICS[metric].run_calibration
    medians = [ref[k][key] for k in ("before", "after") if ref.get(k, {}).get(key) is not None]
    return sum(medians) / len(medians) if medians else None
