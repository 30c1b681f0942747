"""A run folder on disk: ``results.csv`` (one row per case, appended as each case finishes) and
``meta.json`` (what, where, when, how). Reports and comparisons read only these files."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.store import runvalues
from harness.store.errors import RunFolderError, StorageError
from harness.store.limits import MAX_LENGTHS
from harness.store.records import (
    ADDED_COLUMNS,
    CASE_KEY,
    COLUMNS,
    FORMAT_VERSION,
    RENAMED_COLUMNS,
    RENAMED_META,
    RUN_AXES,
    CaseResult,
    case_key,
    is_derived,
    upgrade_axes,
)

RESULTS = "results.csv"
META = "meta.json"
TORN = "results.torn"  # torn rows set aside by --resume
TEXT_COLUMNS = {"reason", "params", "label", "time_samples_ms", "process_medians_ms",
                "process_calibration_ms", "cpu_samples_ms", "process_cpu_medians_ms",
                "process_calibration_cpu_ms", "inputs", "implementation"}  # fmt: skip


MISSING = ["", "nan"]


class TornRowsWarning(UserWarning):
    """Rows cut short by a crash mid-write, skipped by a reader (``--resume`` sets them aside)."""


def _line(result: CaseResult, header: bool, columns: list[str] = COLUMNS) -> bytes:
    """One whole row (after the header, for a new file) as the bytes of a single write. Line
    breaks inside a field become spaces: a row is one line, so a torn one is easy to find.
    ``columns``: the file's, derived ones included (left empty until the sweep's end)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    if header:
        writer.writeheader()
    row = {k: v.replace("\r", " ").replace("\n", " ") if isinstance(v, str) else v
           for k, v in result.row().items()}  # fmt: skip
    writer.writerow(row)
    return buffer.getvalue().encode()


def append_result(out_dir: Path, result: CaseResult) -> None:
    """Append one row with a single write and push it to disk, so an interrupted sweep loses
    nothing and leaves no half row. A write that fails part-way (full disk) is undone: the
    file is cut back to its rows before, and ``StorageError`` says what happened."""
    path = Path(out_dir) / RESULTS
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        data = _line(result, header=size == 0, columns=_header(path) if size else COLUMNS)
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last row: keep it on its own
            data = b"\n" + data
        try:
            written = os.write(fd, data)
            if written != len(data):  # the file system took part of it: full, or a limit
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written "
                              "(disk full or file size limit)")  # fmt: skip
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise StorageError(
                exc.errno,
                f"cannot write {path}: {exc.strerror or exc}; the rows before this case are intact",
            ) from None
    finally:
        os.close(fd)


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), COLUMNS)


def validate_appendable(out_dir: Path) -> None:
    """Rows can be appended: no results yet, or ones with this version's columns, followed by
    derived ones (a file from another version would get rows whose fields do not line up with
    its header)."""
    path = Path(out_dir) / RESULTS
    if not path.exists() or path.stat().st_size == 0:
        return
    header = _split(path).header
    if header[: len(COLUMNS)] != COLUMNS or not all(map(is_derived, header[len(COLUMNS) :])):
        raise RunFolderError(
            f"{path} was written by another version of the harness (its columns differ): "
            "resume is not possible, start a new run folder"
        )


@dataclass(frozen=True)
class _Split:
    """A results file cut into its header, its whole rows and its torn ones (1-based lines)."""

    header: list[str]
    intact: str  # the header line and every whole row, as text
    lines: tuple[int, ...]  # the first line of each whole row in the file
    torn: tuple[tuple[int, str], ...]  # (first line, raw text) of each torn row


def _split(path: Path) -> _Split:
    """Rows whose field count differs from the header's, or a last row without its line end,
    were cut by a crash mid-write (or by a version that wrote rows in pieces): torn."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if "\0" in text:
        raise RunFolderError(f"{path}: holds NUL bytes (not a results file)")
    lines = list(io.StringIO(text, newline=""))  # split as csv does, line ends kept
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
        kept, at, torn = ["".join(lines[: reader.line_num])], [], []
        start = reader.line_num
        for fields in reader:
            record = "".join(lines[start : reader.line_num])
            if not fields and not record.strip():  # a blank line: nothing was lost there
                pass
            elif len(fields) != len(header) or not record.endswith("\n"):
                torn.append((start + 1, record))
            else:
                kept.append(record)
                at.append(start + 1)
            start = reader.line_num
    except csv.Error as exc:
        raise RunFolderError(f"{path}: corrupt at line {reader.line_num} ({exc})") from None
    return _Split(header, "".join(kept), tuple(at), tuple(torn))


def set_aside_torn(out_dir: Path) -> list[int]:
    """For ``--resume``: move torn rows out of the results into ``results.torn`` (kept, so
    nothing is silently lost) and rewrite the results without them, so that their cases run
    again and later rows start on a line of their own. Returns the torn rows' lines."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return []
    split = _split(path)
    if not split.torn:
        return []
    with _writing(Path(out_dir) / TORN), (Path(out_dir) / TORN).open("a") as side:
        for line, record in split.torn:
            side.write(f"# line {line} of {RESULTS}, set aside on resume\n{record.rstrip()}\n")
    tmp = path.with_suffix(".tmp")
    with _writing(path):
        tmp.write_text(split.intact)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    lines = [line for line, _ in split.torn]
    warnings.warn(
        TornRowsWarning(f"{path}: set aside {len(lines)} torn row(s) (line "
                        f"{', '.join(map(str, lines))}) into {TORN}; their cases run again"),
        stacklevel=2,
    )  # fmt: skip
    return lines


def resumable_rows(out_dir: Path) -> pd.DataFrame | None:
    """For ``--resume``: the rows already there (None when there are none yet), once torn rows
    are set aside; ``RunFolderError`` when more rows cannot be appended or read."""
    path = Path(out_dir) / RESULTS
    if not path.is_file() or path.stat().st_size == 0:
        return None
    set_aside_torn(out_dir)  # their cases run again, and new rows start a line
    validate_appendable(out_dir)
    rows = read_results(out_dir)
    if rows["seq_len"].nunique() > MAX_LENGTHS:  # no sweep wrote it; and it takes long to key
        raise RunFolderError(f"{path}: more sequence lengths than the {MAX_LENGTHS} a sweep "
                             "measures: not a run this harness can resume")  # fmt: skip
    return rows


def read_results(out_dir: Path) -> pd.DataFrame:
    """The run's rows. Torn rows are skipped with a ``TornRowsWarning``; a run folder holds one
    run, so rows of another shape or dtype, or the same case twice in one round (two sweeps
    that wrote into one folder), are refused."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        raise RunFolderError(f"{out_dir}: no {RESULTS} (not a run folder?)")
    split = _split(path)
    if split.torn:
        lines = ", ".join(str(line) for line, _ in split.torn)
        warnings.warn(
            TornRowsWarning(f"{path}: skipped {len(split.torn)} torn row(s) (line {lines}), "
                            "cut short by a crash; --resume sets them aside and runs them again"),
            stacklevel=2,
        )  # fmt: skip
    try:
        # empty means missing; "nan" is what the csv module writes for a NaN (a NaN output's
        # error): both read back as NaN, never as text in a numeric column
        df = pd.read_csv(io.StringIO(split.intact), keep_default_na=False, na_values=MISSING)
        df = df.rename(columns=RENAMED_COLUMNS)  # a run of format 2 or older
        df = _with_axes(df)  # a run of format 3 or older
        df = _with_added_columns(df)  # a run of format 5 or older
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunFolderError(f"{path}: truncated or corrupt ({str(exc).splitlines()[0]})") from None
    missing = [c for c in [*CASE_KEY, "status"] if c not in df.columns]
    if missing:
        raise RunFolderError(f"{path}: missing columns {', '.join(missing)}")
    _validate_rows(df, path, split.lines)
    _validate_one_run(df, path, split.lines)
    for column in TEXT_COLUMNS & set(df.columns):
        df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str)
    return df


def _with_axes(df: pd.DataFrame) -> pd.DataFrame:
    """A run before format 4 as a grid of one point (``records.upgrade_axes``)."""
    if "q_len" in df.columns or not {"seq_len", "heads", "params"} <= set(df.columns):
        return df
    axes = ["q_len", "kv_heads", "documents", "causal"]
    rows = [upgrade_axes(row) for row in df.to_dict("records")]
    added = pd.DataFrame(rows, index=df.index, columns=[*df.columns, *axes])[axes]
    at = list(df.columns).index("seed") + 1 if "seed" in df.columns else len(df.columns)
    for offset, column in enumerate(added.columns):
        df.insert(at + offset, column, added[column])
    return df


def _with_added_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A run before format 5: its inputs Gaussian, after ``causal``, and its backends ours, after
    ``yardstick``; before format 6, its pattern "" (unrecorded), after ``implementation``
    (``records.ADDED_COLUMNS``)."""
    if "pattern" in df.columns:  # "" is written as a missing value, and read back as NaN
        df["pattern"] = ["" if pd.isna(v) else str(v) for v in df["pattern"]]
    for column, (after, default) in ADDED_COLUMNS.items():
        if column in df.columns or "seq_len" not in df.columns:
            continue
        columns = list(df.columns)
        at = columns.index(after) + 1 if after in columns else len(columns)
        df.insert(at, column, default)
    return df


def _validate_one_run(df: pd.DataFrame, path: Path, lines: tuple[int, ...]) -> None:
    """Rows of two devices, or one case twice in a round (two sweeps that wrote into one folder),
    would be mixed up in reports without a word."""
    for column in RUN_AXES:
        values = df[column].astype(str).unique()
        if len(values) > 1:
            raise RunFolderError(
                f"{path}: rows of more than one run ({column} {' and '.join(values[:3])}); a "
                "run folder holds one sweep's cases"
            )
    rounds = df["round"] if "round" in df.columns else pd.Series(1, index=df.index)
    twice = df.assign(_round=rounds).duplicated([*CASE_KEY, "_round"])
    if twice.any():
        row = df[twice].iloc[0]
        raise RunFolderError(
            f"{path}: case {row['label']} n={row['seq_len']} {row['pass']} is recorded twice "
            f"(line {lines[int(twice.to_numpy().argmax())]}): two sweeps wrote into this folder"
        )


def _validate_rows(df: pd.DataFrame, path: Path, lines: tuple[int, ...]) -> None:
    """A row edited by hand (or damaged) is refused, naming its line in the file and its field
    (``runvalues.rows_problem``); the numeric columns become numbers."""
    problem = runvalues.rows_problem(df)
    if problem:
        row, what = problem
        where = "header" if row < 0 else f"line {lines[row]}"
        raise RunFolderError(f"{path}: {where}: {what}")


def finished_keys(df: pd.DataFrame) -> set[tuple]:
    """Keys of the cases recorded in a results table (for --resume), as ``Case.key()`` gives."""
    return {case_key(row) for row in df.to_dict("records")}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write of ``path`` (full disk, I/O error) is a ``StorageError``, not a crash."""
    try:
        yield
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None


def rewrite_results(out_dir: Path, df: pd.DataFrame) -> None:
    """Replaces results.csv whole with ``df``'s rows in this version's columns, and the derived
    ones ``df`` has (through a temporary file): how ``upgrade`` stores an older run's missing
    columns, and a finished sweep its derived ones."""
    path = Path(out_dir) / RESULTS
    tmp = path.with_suffix(".tmp")
    with _writing(path):
        defaults = {
            ("pass" if f.name == "pass_" else f.name): f.default
            for f in dataclasses.fields(CaseResult)
            if f.default not in (dataclasses.MISSING, None)
        }
        missing = {c: v for c, v in defaults.items() if c not in df.columns}
        derived = [c for c in df.columns if is_derived(c)]
        df.assign(**missing).reindex(columns=[*COLUMNS, *derived]).to_csv(tmp, index=False)
        tmp.replace(path)


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    """Replaces meta.json whole (through a temporary file), so it is never half written. A meta
    without a ``format_version`` is this version's."""
    meta = {"format_version": FORMAT_VERSION, **meta}
    path = Path(out_dir) / META
    tmp = path.with_suffix(".tmp")
    with _writing(path):
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)


def read_meta(out_dir: Path) -> dict[str, Any]:
    """The run's meta.json, refused (``RunFolderError``) unless it is a JSON object whose
    entries have the types readers expect (``runvalues.meta_problem``)."""
    path = Path(out_dir) / META
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise RunFolderError(f"{path}: not a regular file")
        raise RunFolderError(f"{out_dir}: no {META}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark is harmless
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    meta, problem = runvalues.parse_meta(text)
    if isinstance(meta, dict):  # a run of format 2 or older
        meta = {RENAMED_META.get(k, k): v for k, v in meta.items()}
    problem = problem or runvalues.meta_problem(meta)
    if problem:
        raise RunFolderError(f"{path}: {problem}")
    return meta
