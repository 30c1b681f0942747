"""A corpus of corrupt run folders, each made from the real run in ``tests/data/valid-run`` by
one named corruption, for the fuzz test: every reader (report, compare, baseline save, resume)
must refuse each one in one line with exit code 2, or read it, where the corruption leaves a
readable run (``Corruption.readable``), never end in a traceback.

``build(name, tmp)`` writes one corrupt folder; ``CORRUPTIONS`` lists them all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VALID = Path(__file__).resolve().parent / "data" / "valid-run"
RESULTS, META = "results.csv", "meta.json"
# the options the valid run was swept with, for a resume into a copy of it
VALID_OPTIONS = ["--device", "cpu", "--lengths", "64", "128", "--backends", "full-naive",
                 "full-sdpa", "longformer", "--window", "8", "--min-time", "0.02", "--warmup",
                 "0.01", "--min-repeats", "3", "--heads", "2", "--head-dim", "16"]  # fmt: skip
COMMANDS = ("report", "report-pair", "compare-new", "compare-base", "baseline", "resume")


@dataclass(frozen=True)
class Corruption:
    name: str
    what: str  # one line: what is wrong with the folder
    make: Callable[[Path], None]  # corrupts a copy of the valid run in place
    # commands (of ``COMMANDS``) that read the folder and succeed (exit 0); all others exit 2
    readable: frozenset[str] = frozenset()
    # commands whose exit 2 may instead be a success with a warning line that says this, once
    # the reader skips torn rows with a warning (the lead engineer's storage rewrite)
    torn: bool = False
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot be built here


def _rows() -> tuple[list[str], list[list[str]]]:
    with (VALID / RESULTS).open(newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _valid_meta() -> dict:
    return json.loads((VALID / META).read_text())


def write_bytes(file: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / file).write_bytes(data)


def remove(file: str) -> Callable[[Path], None]:
    return lambda run: (run / file).unlink()


def meta_json(value: object) -> Callable[[Path], None]:
    return write_bytes(META, json.dumps(value).encode())


def meta_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        meta = _valid_meta()
        edit(meta)
        (run / META).write_text(json.dumps(meta))

    return make


def _parent(meta: dict, keys: list) -> dict:
    """The object that holds the last of ``keys`` (a path into meta.json)."""
    for key in keys[:-1]:
        meta = meta[key]
    return meta


def _set(*path_and_value: object) -> Callable[[dict], None]:
    *keys, value = path_and_value

    def edit(meta: dict) -> None:
        _parent(meta, keys)[keys[-1]] = value

    return edit


def _drop(*keys: str) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        del _parent(meta, list(keys))[keys[-1]]

    return edit


def cell(column: str, value: str, row: int = 0) -> Callable[[Path], None]:
    """One field of one row (0: the first) replaced by ``value``."""

    def make(run: Path) -> None:
        header, rows = _rows()
        rows[row][header.index(column)] = value
        (run / RESULTS).write_text(_csv(header, rows))

    return make


def results_text(edit: Callable[[list[str], list[list[str]]], str]) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        (run / RESULTS).write_text(edit(*_rows()))

    return make


def _without(column: str) -> Callable[[list[str], list[list[str]]], str]:
    def edit(header: list[str], rows: list[list[str]]) -> str:
        i = header.index(column)
        return _csv(header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in rows])

    return edit


def _valid_text() -> str:
    return (VALID / RESULTS).read_text()


def _lines() -> list[str]:
    return _valid_text().splitlines(keepends=True)


def _folder(file: str) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        (run / file).unlink()
        (run / file).mkdir()
        (run / file / "inside").write_text("x")

    return make


def _symlink_loop(file: str) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        (run / file).unlink()
        (run / file).symlink_to(file)  # points at itself

    return make


def _dangling(file: str) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        (run / file).unlink()
        (run / file).symlink_to("nowhere")

    return make


def _fifo(file: str) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        (run / file).unlink()
        os.mkfifo(run / file)  # a reader that opened it would wait for a writer forever

    return make


def _unreadable(file: str) -> Callable[[Path], None]:
    return lambda run: (run / file).chmod(0)


def _as_root() -> str | None:
    if os.geteuid() == 0:
        return "running as root: chmod 000 does not stop root from reading the file"
    return None


def _garbage(n: int) -> bytes:
    return random.Random(12).randbytes(n)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _torn_last(header: list[str], rows: list[list[str]]) -> str:
    text = _csv(header, rows)
    return text[: len(text) - 40]  # the last row cut mid-field, no newline


def _long_row(header: list[str], rows: list[list[str]]) -> str:
    rows[3] = rows[3] + ["surplus", "fields"]
    return _csv(header, rows)


def _short_row(header: list[str], rows: list[list[str]]) -> str:
    rows[3] = rows[3][:10]
    return _csv(header, rows)


def _header_twice(header: list[str], rows: list[list[str]]) -> str:
    return _csv(header, [header, *rows])


def _column_twice(header: list[str], rows: list[list[str]]) -> str:
    i = header.index("reason")
    header = [*header[:i], "label", *header[i + 1 :]]  # "label" now names two columns
    return _csv(header, rows)


def _unclosed_quote(header: list[str], rows: list[list[str]]) -> str:
    text = _csv(header, rows)
    cut = text.index("\n", len(text) // 2) + 1
    return text[:cut] + '"' + text[cut:]


def _nul_bytes(header: list[str], rows: list[list[str]]) -> str:
    rows[2][header.index("seq_len")] = "6\x004"
    return _csv(header, rows)


def _foreign(header: list[str], rows: list[list[str]]) -> str:
    return "name,score\nalpha,1\nbeta,2\n"


def _foreign_keys_no_label(header: list[str], rows: list[list[str]]) -> str:
    return _without("label")(header, rows)


def _huge_field(header: list[str], rows: list[list[str]]) -> str:
    rows[0][header.index("params")] = "{" + "x" * (4 * 2**20)
    return _csv(header, rows)


def _extra_column(header: list[str], rows: list[list[str]]) -> str:
    return _csv([*header, "extra"], [[*r, "1"] for r in rows])


def _many_lengths(header: list[str], rows: list[list[str]]) -> str:
    """The probe's 20,000-length run, whose report did not finish in 300 s."""
    n = header.index("seq_len")
    return _csv(header, [[*r[:n], str(1000 + i), *r[n + 1 :]] for i, r in
                         enumerate(rows[0] for _ in range(20_000))])  # fmt: skip


def _swapped_columns(header: list[str], rows: list[list[str]]) -> str:
    header = [header[1], header[0], *header[2:]]
    return _csv(header, [[r[1], r[0], *r[2:]] for r in rows])


_M = META
ALL_READ = frozenset(COMMANDS)
# resume does not read meta.json's fields beyond its own additions: a meta it can extend is fine
RESUME = frozenset({"resume"})
# fmt: off
CORRUPTIONS: tuple[Corruption, ...] = (
    # meta.json: the file itself
    Corruption("meta-missing", "no meta.json", remove(_M)),
    Corruption("meta-empty", "meta.json of 0 bytes", write_bytes(_M, b"")),
    Corruption("meta-truncated", "meta.json cut in half", lambda r: (r / _M).write_bytes(
        (VALID / _M).read_bytes()[:500])),
    Corruption("meta-list", "meta.json is a JSON list", meta_json([1, 2])),
    Corruption("meta-null", "meta.json is null", meta_json(None)),
    Corruption("meta-string", "meta.json is a JSON string", meta_json("meta")),
    Corruption("meta-number", "meta.json is a number", meta_json(42)),
    Corruption("meta-bool", "meta.json is true", meta_json(True)),
    Corruption("meta-not-utf8", "meta.json of bytes that are not UTF-8",
               write_bytes(_M, b'{"device": "\xff\xfe\xfa"}')),
    Corruption("meta-utf16", "meta.json encoded as UTF-16",
               lambda r: (r / _M).write_bytes((VALID / _M).read_text().encode("utf-16"))),
    Corruption("meta-binary", "meta.json of random bytes", write_bytes(_M, _garbage(2000))),
    Corruption("meta-nested-lists", "meta.json of 100000 nested lists",
               write_bytes(_M, _nested(100_000))),
    Corruption("meta-nested-dicts", "meta.json of 100000 nested objects",
               write_bytes(_M, b'{"a":' * 100_000 + b"1" + b"}" * 100_000)),
    Corruption("meta-deep-config", "meta.json whose config holds 50000 nested lists",
               write_bytes(_M, b'{"config": ' + _nested(50_000) + b"}")),
    Corruption("meta-folder", "meta.json is a folder", _folder(_M)),
    Corruption("meta-symlink-loop", "meta.json is a symbolic link to itself", _symlink_loop(_M)),
    Corruption("meta-dangling-link", "meta.json links to nothing", _dangling(_M)),
    Corruption("meta-fifo", "meta.json is a named pipe", _fifo(_M)),
    Corruption("meta-unreadable", "meta.json with mode 000", _unreadable(_M),
               unavailable=_as_root),
    # meta.json: keys the readers use, of the wrong type
    Corruption("meta-config-list", "config is a list", meta_edit(_set("config", [1]))),
    Corruption("meta-config-string", "config is a string", meta_edit(_set("config", "x"))),
    Corruption("meta-timing-list", "config.timing is a list",
               meta_edit(_set("config", "timing", []))),
    Corruption("meta-backends-list", "config.backends is a list",
               meta_edit(_set("config", "backends", ["a"]))),
    Corruption("meta-reference-list", "calibration is a list",
               meta_edit(_set("calibration", [1, 2]))),
    Corruption("meta-reference-before-string", "calibration.before is a string",
               meta_edit(_set("calibration", "before", "fast"))),
    Corruption("meta-reference-median-text", "the reference median is text",
               meta_edit(_set("calibration", "before", "median_ms", "fast"))),
    Corruption("meta-reference-median-negative", "the reference median is negative",
               meta_edit(_set("calibration", "after", "median_ms", -3.0))),
    Corruption("meta-reference-median-zero", "the reference median is 0",
               meta_edit(_set("calibration", "after", "median_ms", 0))),
    Corruption("meta-reference-median-nan", "the reference median is NaN",
               meta_edit(_set("calibration", "before", "median_ms", float("nan")))),
    Corruption("meta-reference-cpu-list", "the reference CPU median is a list",
               meta_edit(_set("calibration", "before", "cpu_median_ms", [1]))),
    Corruption("meta-conditions-list", "conditions is a list",
               meta_edit(_set("conditions", [1]))),
    Corruption("meta-resumed-dict", "resumed is an object, not a list",
               meta_edit(_set("resumed", {"a": 1}))),
    Corruption("meta-resumed-strings", "resumed is a list of strings",
               meta_edit(_set("resumed", ["x"]))),
    Corruption("meta-device-name-dict", "device_name is an object",
               meta_edit(_set("device_name", {"a": 1}))),
    Corruption("meta-command-list", "command is a list", meta_edit(_set("command", ["x"]))),
    Corruption("meta-no-device-name", "no device_name (a key the report shows): still readable",
               meta_edit(_drop("device_name")), readable=ALL_READ),
    # results.csv: the file itself
    Corruption("results-missing", "no results.csv", remove(RESULTS), readable=RESUME),
    Corruption("results-empty", "results.csv of 0 bytes", write_bytes(RESULTS, b""),
               readable=RESUME),
    Corruption("results-header-only", "results.csv with its header and no row",
               results_text(lambda h, r: _csv(h, [])), readable=RESUME),
    Corruption("results-utf16", "results.csv encoded as UTF-16",
               lambda r: (r / RESULTS).write_bytes(_valid_text().encode("utf-16"))),
    Corruption("results-latin1", "results.csv with Latin-1 bytes in a label",
               lambda r: (r / RESULTS).write_bytes(_valid_text().replace(
                   "full-naive,full,full-naive", "full-naive,full,naïve", 1).encode("latin-1"))),
    Corruption("results-binary", "results.csv of random bytes",
               write_bytes(RESULTS, _garbage(5000))),
    Corruption("results-nul-bytes", "results.csv with a NUL byte inside a length",
               results_text(_nul_bytes)),
    Corruption("results-foreign", "a foreign CSV: no harness column at all",
               results_text(_foreign)),
    Corruption("results-no-label", "a CSV with the key columns and status but no label",
               results_text(_foreign_keys_no_label)),
    Corruption("results-no-status", "no status column", results_text(_without("status"))),
    Corruption("results-no-seq-len", "no seq_len column", results_text(_without("seq_len"))),
    Corruption("results-no-backend", "no backend column", results_text(_without("backend"))),
    Corruption("results-no-time-median", "no time_median_ms column",
               results_text(_without("time_median_ms"))),
    Corruption("results-no-peak-mem", "no peak_mem_bytes column",
               results_text(_without("peak_mem_bytes"))),
    Corruption("results-header-twice", "the header repeated as the first row",
               results_text(_header_twice)),
    Corruption("results-column-twice", "one column name twice in the header",
               results_text(_column_twice)),
    Corruption("results-extra-column", "a column this version does not write: reports read "
               "it, resume refuses to append", results_text(_extra_column),
               readable=ALL_READ - RESUME),
    Corruption("results-swapped-columns", "two columns in another order: reports read it by "
               "name, resume refuses to append", results_text(_swapped_columns),
               readable=ALL_READ - RESUME),
    Corruption("results-unclosed-quote", "a quote opened and never closed",
               results_text(_unclosed_quote), torn=True),
    Corruption("results-long-row", "a row in the middle with two fields too many",
               results_text(_long_row), torn=True),
    Corruption("results-short-row", "a row in the middle cut to 10 fields",
               results_text(_short_row), torn=True),
    Corruption("results-torn-last-row", "the last row cut mid-field, no newline",
               results_text(_torn_last), torn=True),
    Corruption("results-huge-field", "a 4 MiB params field", results_text(_huge_field)),
    Corruption("results-20000-lengths", "20,000 lengths: more than a sweep measures",
               results_text(_many_lengths)),
    Corruption("results-folder", "results.csv is a folder", _folder(RESULTS)),
    Corruption("results-symlink-loop", "results.csv is a link to itself",
               _symlink_loop(RESULTS)),
    Corruption("results-dangling-link", "results.csv links to nothing", _dangling(RESULTS)),
    Corruption("results-fifo", "results.csv is a named pipe", _fifo(RESULTS)),
    Corruption("results-unreadable", "results.csv with mode 000", _unreadable(RESULTS),
               unavailable=_as_root),
)
# results.csv: values; resume reads them only after it has named its cases
VALUES: tuple[Corruption, ...] = (
    Corruption("status-unknown", "status 'great'", cell("status", "great")),
    Corruption("status-empty", "an empty status", cell("status", "")),
    Corruption("seq-len-1e23", "seq_len 1e23", cell("seq_len", "1e23")),
    Corruption("seq-len-0", "seq_len 0", cell("seq_len", "0")),
    Corruption("seq-len-negative", "seq_len -5", cell("seq_len", "-5")),
    Corruption("seq-len-fraction", "seq_len 1.5", cell("seq_len", "1.5")),
    Corruption("seq-len-text", "seq_len 'long'", cell("seq_len", "long")),
    Corruption("seq-len-inf", "seq_len inf", cell("seq_len", "inf")),
    Corruption("seq-len-huge-int", "seq_len of 30 digits", cell("seq_len", "9" * 30)),
    Corruption("batch-0", "batch 0", cell("batch", "0")),
    Corruption("heads-negative", "heads -2", cell("heads", "-2")),
    Corruption("head-dim-fraction", "head_dim 16.5", cell("head_dim", "16.5")),
    Corruption("seed-text", "seed 'abc'", cell("seed", "abc")),
    Corruption("time-text", "time_median_ms 'fast' in an ok row", cell("time_median_ms", "fast")),
    Corruption("time-negative", "time_median_ms -1", cell("time_median_ms", "-1")),
    Corruption("time-zero", "time_median_ms 0", cell("time_median_ms", "0")),
    Corruption("time-inf", "time_median_ms inf", cell("time_median_ms", "inf")),
    Corruption("time-nan", "time_median_ms nan in an ok row", cell("time_median_ms", "nan")),
    Corruption("iqr-text", "time_iqr_ms 'wide'", cell("time_iqr_ms", "wide")),
    Corruption("iqr-negative", "time_iqr_ms -0.5", cell("time_iqr_ms", "-0.5")),
    Corruption("memory-text", "peak_mem_bytes 'lots'", cell("peak_mem_bytes", "lots")),
    Corruption("memory-negative", "peak_mem_bytes -100", cell("peak_mem_bytes", "-100")),
    Corruption("memory-inf", "peak_mem_bytes inf", cell("peak_mem_bytes", "inf")),
    Corruption("error-text", "max_err 'tiny'", cell("max_err", "tiny")),
    Corruption("error-negative", "max_err -1", cell("max_err", "-1")),
    Corruption("err-vs-full-text", "err_vs_full 'big'", cell("err_vs_full", "big")),
    Corruption("cpu-median-text", "cpu_median_ms 'x'", cell("cpu_median_ms", "x")),
    Corruption("other-cpu-text", "other_cpu 'busy'", cell("other_cpu", "busy")),
    Corruption("ref-drift-text", "calibration_drift 'some'", cell("calibration_drift", "some")),
    Corruption("repeats-text", "repeats 'many'", cell("repeats", "many")),
    Corruption("round-zero", "round 0", cell("round", "0")),
    Corruption("round-text", "round 'two'", cell("round", "two")),
    Corruption("samples-text", "a word among the time samples",
               cell("time_samples_ms", "0.2 fast 0.3")),
    Corruption("samples-inf", "inf among the time samples", cell("time_samples_ms", "0.2 inf")),
    Corruption("samples-negative", "a negative time sample", cell("time_samples_ms", "-0.2 1")),
    Corruption("process-medians-text", "garbage in process_medians_ms",
               cell("process_medians_ms", "x;y")),
    Corruption("process-calibration-text", "garbage in process_calibration_ms",
               cell("process_calibration_ms", "[1]")),
    Corruption("cpu-samples-text", "garbage in cpu_samples_ms", cell("cpu_samples_ms", "1,2")),
    Corruption("process-cpu-text", "garbage in process_cpu_medians_ms",
               cell("process_cpu_medians_ms", "nan? 3")),
)
# fmt: on
CORRUPTIONS += VALUES
BY_NAME = {c.name: c for c in CORRUPTIONS}
assert len(BY_NAME) == len(CORRUPTIONS), "corruption names must be unique"


def build(name: str, tmp: Path) -> Path:
    """A copy of the valid run at ``tmp / name`` with corruption ``name`` applied."""
    run = Path(tmp) / name
    shutil.copytree(VALID, run)
    BY_NAME[name].make(run)
    return run


def valid_copy(tmp: Path, name: str = "good") -> Path:
    run = Path(tmp) / name
    shutil.copytree(VALID, run)
    return run
