"""A run folder on disk: ``results.csv`` (one row per case, appended as each case finishes) and
``meta.json`` (what, where, when, how). Reports and comparisons read only these files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records import COLUMNS, KEY_COLUMNS, STATUSES, CaseResult

RESULTS = "results.csv"
META = "meta.json"
TEXT_COLUMNS = {"reason", "params", "label", "time_samples_ms", "process_medians_ms",
                "process_ref_ms", "cpu_samples_ms", "process_cpu_medians_ms",
                "process_ref_cpu_ms"}  # fmt: skip


MISSING = ["", "nan"]


class RunFolderError(ValueError):
    """The folder is not a readable run."""


def append_result(out_dir: Path, result: CaseResult) -> None:
    """Append one row and push it to disk, so an interrupted sweep loses nothing."""
    path = out_dir / RESULTS
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(result.row())
        f.flush()
        os.fsync(f.fileno())


def check_appendable(out_dir: Path) -> None:
    """Rows can be appended: no results yet, or ones with this version's columns (a file from
    another version would get rows whose fields do not line up with its header)."""
    path = Path(out_dir) / RESULTS
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if header != COLUMNS:
        raise RunFolderError(
            f"{path} was written by another version of the harness (its columns differ): "
            "resume is not possible, start a new run folder"
        )


def read_results(out_dir: Path) -> pd.DataFrame:
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        raise RunFolderError(f"{out_dir}: no {RESULTS} (not a run folder?)")
    try:
        # empty means missing; "nan" is what the csv module writes for a NaN (a NaN output's
        # error): both read back as NaN, never as text in a numeric column
        df = pd.read_csv(path, keep_default_na=False, na_values=MISSING)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: truncated or corrupt ({str(exc).splitlines()[0]})") from None
    missing = [c for c in [*KEY_COLUMNS, "status"] if c not in df.columns]
    if missing:
        raise RunFolderError(f"{path}: missing columns {', '.join(missing)}")
    _check_rows(df, path)
    for column in TEXT_COLUMNS & set(df.columns):
        df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str)
    return df


def _check_rows(df: pd.DataFrame, path: Path) -> None:
    """A row cut short (a sweep killed mid-write) or edited by hand is refused, naming its line."""
    numbers = ["seq_len", "batch", "heads", "head_dim"]
    bad = ~df["status"].isin(STATUSES)
    for column in numbers:
        bad |= pd.to_numeric(df[column], errors="coerce").isna()
    ok = df["status"] == "ok"
    if "time_median_ms" in df.columns:
        bad |= ok & pd.to_numeric(df["time_median_ms"], errors="coerce").isna()
    if "round" in df.columns:  # the last column, always written since it was added
        bad |= pd.to_numeric(df["round"], errors="coerce").isna()
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2  # 1-based, after the header
        raise RunFolderError(f"{path}: line {line} is truncated or corrupt")
    for column in numbers:
        df[column] = df[column].astype(int)


def finished_keys(df: pd.DataFrame) -> set[tuple]:
    """Keys of the cases recorded in a results table (for --resume), as ``Case.key()`` gives."""
    return {tuple(_key_value(c, r[c]) for c in KEY_COLUMNS) for _, r in df.iterrows()}


def _key_value(column: str, value: Any) -> Any:
    return int(value) if column in ("seq_len", "batch", "heads", "head_dim", "seed") else str(value)


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    path = Path(out_dir) / META
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def read_meta(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / META
    if not path.is_file():
        raise RunFolderError(f"{out_dir}: no {META}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
