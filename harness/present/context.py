"""The report's context table: the machine, versions, command, shape (the swept values of a
grid) and timing settings of a run, from its meta.json."""

from __future__ import annotations

import pandas as pd

from harness.store import distributions


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
        ("shape", _shape_text(config)),
        ("inputs", _inputs_text(config, meta)),
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


def _values(value: object) -> str:
    """A configured axis: its value, or its values where a sweep swept several (a list)."""
    if not isinstance(value, list):
        return str(value)
    return " and ".join("n" if v is None else str(v) for v in value)


# the grid axes a run of format 4 may sweep, shown where not at their one default value
_EXTRA_AXES = {"kv_heads": [None], "q_len": [None], "documents": [1], "causal": [False]}


def _shape_text(config: dict) -> str:
    text = (
        f"batch {_values(config.get('batch'))}, heads {_values(config.get('heads'))}, head_dim "
        f"{_values(config.get('head_dim'))}, {_values(config.get('dtype'))}, "
        f"seed {_values(config.get('seed'))}"
    )
    extra = [f"{axis} {_values(config[axis])}" for axis, default in _EXTRA_AXES.items()
             if axis in config and config[axis] != default]  # fmt: skip
    return ", ".join([text, *extra])


def _inputs_text(config: dict, meta: dict) -> str:
    """The distributions q, k and v were drawn from (Gaussian before format 5), each with its
    description where it is short (the structured one's is in the accuracy section)."""
    names = config.get("distribution") or [distributions.DEFAULT]
    names = names if isinstance(names, list) else [names]
    recorded = meta.get("input_distributions") or {}
    parts = []
    for name in names:
        text = str(recorded.get(name) or distributions.description(str(name)))
        if text == name:  # a distribution this version does not know
            parts.append(str(name))
        else:
            parts.append(f"{name} ({text if len(text) <= 60 else 'described under Accuracy'})")
    return " and ".join(parts)
