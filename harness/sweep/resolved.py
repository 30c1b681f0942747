"""A sweep's resolved configuration as one flat table keyed by the command line's long options
without their dashes (``head_dim`` for ``--head-dim``, ``hashes`` for ``--hashes``): written into
the run folder as ``sweep.toml`` when the sweep starts, so that ``run_bench.py --config
RUN/sweep.toml --out NEW`` sweeps the same cases again (``harness.cli.sweep_file`` reads it);
and the same table as command-line words, for meta.json's ``command``.

``out`` and ``resume`` are left out: a replay is a new run. What the command line cannot say is
left out too: a grid of a bool parameter, several values of a list parameter (``--global-tokens``
takes one list), an axis mixing None (as many as heads, the whole length) with numbers; those come
only from Python, whose sweeps name the settings of theirs that these miss."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.measure.inputs import dtype_name
from harness.measure.params import Flag, fields_of, merged
from harness.measure.registry import get_backend_class
from harness.store.errors import StorageError
from harness.sweep.config import SweepConfig

SWEEP_TOML = "sweep.toml"
AXIS_PARAMS = ("causal",)  # Params fields set from an axis of the problem, not a parameter grid


def table(config: SweepConfig) -> dict[str, Any]:
    """Every setting of ``config`` that decides which cases run and how they are measured."""
    t = config.timing
    out: dict[str, Any] = {
        "lengths": list(config.lengths),
        "backends": list(config.backends),
        "modes": list(config.passes),
        "device": config.device,
        "dtype": [dtype_name(d) for d in config.dtype],
        "batch": list(config.batch),
        "heads": list(config.heads),
    }
    for axis in ("kv_heads", "head_dim", "q_len", "documents"):
        values = [v for v in getattr(config, axis) if v is not None]
        if values:  # None alone is the option left out
            out[axis] = values
    out["causal"] = list(config.causal)
    out["inputs"] = list(config.distribution)
    out["seed"] = config.seed
    out |= _param_entries(config)
    out |= {"min_time": t.min_time_s, "min_repeats": t.min_repeats, "warmup": t.warmup_s,
            "processes": config.processes, "case_timeout": config.case_timeout_s,
            "check_rows": config.check_rows, "order": config.order}  # fmt: skip
    if config.threads:
        out["threads"] = config.threads
    if config.time_budget_s is not None:
        out["time_budget"] = config.time_budget_s
    if config.imports:
        out["import"] = list(config.imports)
    return out


def backend_flags(config: SweepConfig) -> list[Flag]:
    """The parameter flags of the selected backends (the only ones a sweep's grid can hold)."""
    classes = dict.fromkeys(get_backend_class(name) for name in config.backends)
    return merged(f for cls in classes for f in fields_of(cls.Params, cls.family))


def _param_entries(config: SweepConfig) -> dict[str, Any]:
    by_field = {f.dest: f for f in backend_flags(config)}
    out: dict[str, Any] = {}
    for field, values in config.param_grid:
        flag = by_field.get(field)
        if flag is None or field in AXIS_PARAMS:
            continue
        key = flag.flag.removeprefix("--").replace("-", "_")
        if flag.kind == "bool":
            if set(values) == {not flag.flag.startswith("--no-")}:
                out[key] = True  # the flag given; its other value is the default
        elif flag.kind == "ints":
            if len(values) == 1:
                out[key] = list(values[0])
        else:
            out[key] = list(values)
    return out


def command_words(entries: dict[str, Any]) -> list[str]:
    """The command-line words that set what ``entries`` (a ``table``) holds."""
    words: list[str] = []
    for key, value in entries.items():
        option = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words += [option] if value else []
        elif key == "causal":
            words += [option, *("on" if v else "off" for v in value)]
        elif isinstance(value, list):
            words += [option, *map(_word, value)]
        else:
            words += [option, _word(value)]
    return words


def _word(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def dumps(entries: dict[str, Any], header: str = "") -> str:
    """TOML of a flat table whose values are strings, numbers, bools or lists of them."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in entries.items():
        if not key.replace("_", "").replace("-", "").isalnum() or not key.isascii():
            raise ValueError(f"not a bare TOML key: {key!r}")
        lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ("-inf" if value < 0 else "inf") if math.isinf(value) else "nan"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}: {value!r}")


def _string(text: str) -> str:
    # a basic string: quote, backslash and control characters escaped, the rest as it is
    escaped = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escaped:
            out.append(escaped[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def write(config: SweepConfig) -> Path:
    """``sweep.toml`` of the run, through a temporary file (a failed write: ``StorageError``)."""
    path = Path(config.out_dir) / SWEEP_TOML
    header = (
        "The resolved sweep of this run: 'run_bench.py --config sweep.toml --out NEW'\n"
        "measures the same cases again (options given beside it override these)."
    )
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(dumps(table(config), header))
        tmp.replace(path)
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    return path
