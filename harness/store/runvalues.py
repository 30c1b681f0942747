"""What the values of a run folder must be: the shape of ``meta.json`` and the value of every
field of ``results.csv``'s rows. ``harness.store.storage`` reads the files and calls these, so that
no reader (report, compare, baseline, resume) meets a list where a dict belongs, or text, an
infinity or a negative number where a time belongs, and fails somewhere far from the cause.

Each check returns the problem in words (``None``: none); the reader raises it."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from harness.store import limits
from harness.store.records import Status

# meta.json keys a reader uses -> the JSON types they may hold (null is always allowed: a run
# recorded before the key existed reads as one without it)
_TEXT = ("created", "command", "git_commit", "device", "device_name", "cpu", "hostname",
         "platform", "python", "torch", "cuda", "xformers", "pandas")  # fmt: skip
_OBJECTS = ("config", "conditions", "calibration", "input_distributions")
_CONFIG_OBJECTS = ("timing", "backends")
_CONFIG_LISTS = ("lengths", "passes")
_TIMES = ("median_ms", "cpu_median_ms")  # calibration.before/after


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), "a number"
    )


def parse_meta(text: str) -> tuple[Any, str | None]:
    """The parsed JSON, or the reason it cannot be parsed."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc})"
    except RecursionError:  # json nests by recursion: 100000 open brackets exhaust the stack
        return None, "not valid JSON for a run: nested too deeply"


def meta_problem(meta: Any) -> str | None:
    """Why ``meta`` is not a run's meta.json, or None."""
    if not isinstance(meta, dict):
        return f"holds {_kind(meta)}, not a JSON object"
    for key in _TEXT:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return f"{key} is {_kind(meta[key])}, not text"
    for key in _OBJECTS:
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"{key} is {_kind(meta[key])}, not an object"
    config = meta.get("config") or {}
    for key, kind, name in [*((k, dict, "an object") for k in _CONFIG_OBJECTS),
                            *((k, list, "a list") for k in _CONFIG_LISTS)]:  # fmt: skip
        if config.get(key) is not None and not isinstance(config[key], kind):
            return f"config.{key} is {_kind(config[key])}, not {name}"
    for section in ("conditions", "calibration"):
        for side, value in (meta.get(section) or {}).items():
            if value is not None and not isinstance(value, dict):
                return f"{section}.{side} is {_kind(value)}, not an object"
    for name, text in (meta.get("input_distributions") or {}).items():
        if not isinstance(text, str):
            return f"input_distributions.{name} is {_kind(text)}, not text"
    for side in ("before", "after"):
        ref = (meta.get("calibration") or {}).get(side) or {}
        for key in _TIMES:
            value = ref.get(key)
            if value is not None and not _positive_number(value):
                return f"calibration.{side}.{key} is {value!r}, not a positive time"
    resumed = meta.get("resumed")
    if resumed is not None and not (
        isinstance(resumed, list) and all(isinstance(r, dict) for r in resumed)
    ):
        return "resumed is not a list of objects"
    return None


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


# results.csv columns -> (least, most) of their integers; required ones may not be empty
_REQUIRED_INTEGERS = {"seq_len": (1, limits.MAX_LENGTH), "batch": (1, limits.MAX_BATCH),
                      "heads": (1, limits.MAX_HEADS), "head_dim": (1, limits.MAX_HEAD_DIM),
                      "seed": (0, limits.MAX_SEED), "round": (1, 1000),
                      "q_len": (1, limits.MAX_LENGTH), "kv_heads": (1, limits.MAX_HEADS),
                      "documents": (1, limits.MAX_LENGTH)}  # fmt: skip
_INTEGERS = {"repeats": (1, math.inf), "warmup_calls": (0, math.inf),
             "check_rows": (0, limits.MAX_LENGTH), "threads": (1, math.inf)}  # fmt: skip
# numbers that cannot be negative or infinite (times, bytes, shares of the CPUs, a clock)
_AMOUNTS = ("time_median_ms", "time_iqr_ms", "prepare_ms", "first_call_ms", "calibration_drift",
            "cpu_median_ms", "cpu_iqr_ms", "other_cpu", "steal", "load_avg", "cpu_mhz",
            "gpu_clock_mhz", "peak_mem_bytes", "wall_s")  # fmt: skip
_SIGNED = ("gpu_temp_c",)
# output errors: NaN (an output of NaN) and infinity (one that overflowed) are measurements
_ERRORS = ("max_err", "err_vs_full")
_SAMPLES = ("time_samples_ms", "process_medians_ms", "process_calibration_ms", "cpu_samples_ms",
            "process_cpu_medians_ms", "process_calibration_cpu_ms")  # fmt: skip
_NAME = r"[a-z][a-z0-9_-]{0,39}"  # of an input distribution
_MANGLED = re.compile(r"(.+)\.[0-9]+")  # pandas' name for a column whose name came twice


def rows_problem(df: pd.DataFrame) -> tuple[int, str] | None:
    """(0-based row, what is wrong) of the first bad field, or a header problem as row -1;
    converts the numeric columns to numbers in place once all are known good."""
    for column in df.columns:
        m = _MANGLED.fullmatch(str(column))
        if m and m.group(1) in df.columns:
            return -1, f"the column {m.group(1)} appears twice in the header"
    found: list[tuple[int, str]] = []
    bad = ~df["status"].isin(list(Status))
    if bad.any():
        i = _first(bad)
        status = _show(df["status"].iloc[i])
        found.append((i, f"status {status} is not one of {', '.join(Status)}"))
    numbers: dict[str, pd.Series] = {}
    for column, (low, high) in {**_REQUIRED_INTEGERS, **_INTEGERS}.items():
        if column not in df.columns:
            continue
        x = numbers[column] = pd.to_numeric(df[column], errors="coerce")
        given = df[column].notna()
        wrong = (given & x.isna()) | (x.notna() & ((x % 1 != 0) | (x < low) | (x > high)))
        if column in _REQUIRED_INTEGERS:
            wrong |= ~given
        if wrong.any():
            i = _first(wrong)
            most = f"{high:,}" if high < math.inf else "any"
            found.append((i, f"{column} {_show(df[column].iloc[i])} is not a whole number from "
                             f"{low} to {most}"))  # fmt: skip
    for columns, allowed, what in ((_AMOUNTS, "amount", "a number, 0 or more, finite"),
                                   (_SIGNED, "signed", "a finite number"),
                                   (_ERRORS, "magnitude", "a number, 0 or more")):  # fmt: skip
        for column in columns:
            if column not in df.columns:
                continue
            x = numbers[column] = pd.to_numeric(df[column], errors="coerce")
            wrong = df[column].notna() & x.isna()
            if allowed == "amount":
                wrong |= x.notna() & ((x < 0) | ~np.isfinite(x))
            elif allowed == "signed":
                wrong |= x.notna() & ~np.isfinite(x)
            else:
                wrong |= x < 0
            if wrong.any():
                i = _first(wrong)
                found.append((i, f"{column} {_show(df[column].iloc[i])} is not {what}"))
    if "time_median_ms" in numbers:
        t = numbers["time_median_ms"]
        wrong = (df["status"] == Status.OK) & ~(t > 0)
        if wrong.any():
            i = _first(wrong)
            found.append((i, f"time_median_ms {_show(df['time_median_ms'].iloc[i])} of a "
                             "measured case is not a positive time"))  # fmt: skip
    if "inputs" in df.columns:  # a distribution's name (``distributions.NAMES``, or a later one)
        wrong = ~df["inputs"].astype(str).str.fullmatch(_NAME) | df["inputs"].isna()
        if wrong.any():
            i = _first(wrong)
            found.append((i, f"inputs {_show(df['inputs'].iloc[i])} is not the name of an input "
                             "distribution"))  # fmt: skip
    for column in _SAMPLES:
        if column in df.columns:
            problem = _samples_problem(df[column], column)
            if problem:
                found.append(problem)
    if found:
        return min(found)
    for column, x in numbers.items():
        df[column] = x.astype("int64") if column in _REQUIRED_INTEGERS else x.astype(float)
    return None


def _samples_problem(values: pd.Series, column: str) -> tuple[int, str] | None:
    """Space-separated times: each a finite number, 0 or more (one alone reads as a number)."""
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                times = [float(t) for t in value.split()]
            except ValueError:
                return i, f"{column} {_show(value)} is not a list of times (space separated)"
        elif pd.isna(value):
            continue
        else:
            times = [float(value)]
        if not all(0 <= t < math.inf for t in times):
            return i, f"{column} {_show(value)} holds a negative, infinite or NaN time"
    return None


def _first(mask: pd.Series) -> int:
    return int(mask.to_numpy().argmax())


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
