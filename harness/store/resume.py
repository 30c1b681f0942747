"""What ``--resume`` may not change: a run folder holds one sweep, so the resumed part must
measure the same cases the same way as the part before it.

The comparison is between two descriptions written to meta.json (``config``, ``device`` and
``threads``): the run's first and the resumption's. Every entry of ``config`` counts, since
each is either part of a case's identity (backends and their parameter grid, lengths, modes,
the problem's axes, seed) or of how it is measured (timing, processes, timeout, check rows).
"""

from __future__ import annotations

import json
from typing import Any

from harness.store import distributions

# meta.json entry -> the option that sets it
FLAGS = {
    "lengths": "--lengths",
    "backends": "--backends",
    "passes": "--modes",
    "dtype": "--dtype",
    "batch": "--batch",
    "heads": "--heads",
    "kv_heads": "--kv-heads",
    "head_dim": "--head-dim",
    "q_len": "--q-len",
    "documents": "--documents",
    "causal": "--causal",
    "distribution": "--inputs",
    "seed": "--seed",
    "case_timeout_s": "--case-timeout",
    "processes": "--processes",
    "check_rows": "--check-rows",
    "device": "--device",
    "threads": "--threads",
}
TIMING_FLAGS = {"warmup_s": "--warmup", "min_time_s": "--min-time", "min_repeats": "--min-repeats"}
# the problem's axes, stored as lists of values (one value each in runs before grids)
AXES = ("dtype", "batch", "heads", "kv_heads", "head_dim", "q_len", "documents", "causal",
        "distribution")  # fmt: skip


# Backend parameters added after runs were recorded, each with the value a run recorded without
# it computed with, so that resuming such a run is the same sweep exactly when its backends
# still compute the same thing (issue 16: BigBird drew one random plan for every head, Reformer
# about N/c buckets with the paper's other conventions, Longformer's global rows read q, k, v)
ADDED_PARAMETERS: dict[str, Any] = {
    "separate_global_qkv": False,
    "shared_random_plan": True,
    "buckets_per_chunk": 1,
    "unscaled_logits": False,
    "count_per_round": False,
    "look_back_across_rounds": False,
}


def identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of a meta.json description that a resumption must repeat."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    described = {**config, "device": meta.get("device"), "threads": meta.get("threads")}
    described = json.loads(json.dumps(described, default=str))  # as stored: tuples become lists
    for axis in AXES:
        if axis in described and not isinstance(described[axis], list):
            described[axis] = [described[axis]]
    if config and "params" not in config:  # a run before grids: its one point, spelt out
        causal = any(p.get("causal") for p in (config.get("backends") or {}).values()
                     if isinstance(p, dict))  # fmt: skip
        defaults = {"kv_heads": [None], "q_len": [None], "documents": [1], "causal": [causal]}
        described = {**defaults, **described}
    if config and "distribution" not in config:  # a run before format 5: Gaussian inputs
        described["distribution"] = [distributions.DEFAULT]
    return described


def differences(first: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"--dtype float64 (the run has float32)"`` for each option that differs between the
    run's first description and this resumption's."""
    a, b = identity(first), identity(now)
    if "params" not in a:  # before grids each backend's parameters were all there was of them
        b.pop("params", None)
    found = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key == "timing":
            found += _timing(a.get(key) or {}, b.get(key) or {})
        elif key == "backends":
            found += _backends(a.get(key) or {}, b.get(key) or {})
        elif key == "params":
            found += _params(a.get(key) or {}, b.get(key) or {})
        else:
            flag = FLAGS.get(key, key)
            found.append(f"{flag} {_show(b.get(key))} (the run has {_show(a.get(key))})")
    return found


def _timing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = [f"{flag} {_show(b.get(k))} (the run has {_show(a.get(k))})"
           for k, flag in TIMING_FLAGS.items() if a.get(k) != b.get(k)]  # fmt: skip
    rest = sorted(k for k in set(a) | set(b) if k not in TIMING_FLAGS and a.get(k) != b.get(k))
    return out + [f"timing setting {k} (another version of the harness?)" for k in rest]


def _backends(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    if set(a) != set(b):
        return [f"--backends {' '.join(b)} (the run has {' '.join(a)})"]
    return [
        f"{name}'s parameters {_show(b[name])} (the run has {_show(a[name])})"
        for name in a
        if with_added(a[name], b[name]) != b[name]
    ]


def with_added(stored: Any, now: Any) -> Any:
    """A backend's parameters as the run recorded them, with those added to the harness since
    (``ADDED_PARAMETERS``) that ``now`` has, at the value the run computed with."""
    if not (isinstance(stored, dict) and isinstance(now, dict)):
        return stored
    added = {k: v for k, v in ADDED_PARAMETERS.items() if k in now and k not in stored}
    return {**stored, **added}


def _params(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [
        f"backend parameter {k} {_show(b.get(k, 'unset'))} (the run has {_show(a.get(k, 'unset'))})"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        if any(isinstance(v, list) for v in value):  # a list parameter's values
            return " ".join(json.dumps(v, separators=(",", ":")) for v in value)
        return " ".join(_show(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
