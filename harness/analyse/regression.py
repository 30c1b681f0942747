"""``run_bench.py compare BASELINE NEW``: did a case get slower or hungrier beyond tolerance?

Pure functions of two runs' ``results.csv`` rows: the cases of the two runs matched, each case
judged by the statistics of ``harness.analyse.significance`` (which this module's callers may
also import from here) on the values ``time_values`` picks (the medians of several processes
where a run has them, else every stored sample), and the whole comparison's ``outcome``.

A time verdict is only as good as the conditions the times were taken in: where either side
was measured unstably (``harness.analyse.stability``), where the calibration says the two
machines' moments are not comparable, or where too few processes make the test's significance
unfounded, the verdict is ``inconclusive`` with the reason, never ``regressed``, ``slower``,
``faster`` or ``same`` (``strict`` judges on the statistics alone). Memory growth and newly
failing cases do not depend on the machine's speed and are judged as usual.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from harness.analyse import stability
from harness.analyse.rules import CompareSettings, Outcome, Tolerances, Verdict, parse_fraction
from harness.analyse.significance import (
    EXACT_MAX_N,
    TimeVerdict,
    bootstrap_ratio_ci,
    mann_whitney_p,
    min_p,
    verdict_memory,
    verdict_time,
)
from harness.store.records import FAILED, METRICS, Status, check_failed, parse_floats
from harness.store.runs import matching_key

# the run comparison's names, and the statistics' (importable from here, as before they had a
# module of their own)
__all__ = [
    "COLUMNS",
    "EXACT_MAX_N",
    "RENAMED",
    "CompareSettings",
    "Outcome",
    "TimeVerdict",
    "Tolerances",
    "Values",
    "Verdict",
    "bootstrap_ratio_ci",
    "compare_runs",
    "mann_whitney_p",
    "min_p",
    "outcome",
    "parse_fraction",
    "regressed",
    "time_values",
    "verdict_memory",
    "verdict_time",
]


def _floats(row: pd.Series, column: str) -> np.ndarray:
    return np.asarray(parse_floats(row.get(column)))


class Values(NamedTuple):
    base: np.ndarray
    new: np.ndarray
    what: str  # e.g. "CPU-time process medians, per-case calibration"
    per_process: bool  # one median per process on each side (else one process's samples)


def time_values(
    r: pd.Series, run_scales: tuple[float, float] | None = None, metric: str = "wall"
) -> Values:
    """What a case's time verdict compares: the baseline's values, the new ones, what they are.

    Where both sides timed the case in 3 or more processes, the per-process medians: samples
    within one process share its moment and would make a slow minute look significant.
    Otherwise every stored sample (the median alone for rows that kept none).
    ``run_scales`` (normalised mode, each run's calibration time) is the fallback divisor
    for rows without their own calibration times: where both have them, each process's values are
    divided by the calibration timed in that process. ``metric`` picks wall or CPU time."""
    m = METRICS[metric]
    sides = []
    for side in ("base", "new"):
        processes = _floats(r, f"{m.process_medians}_{side}")
        samples = _floats(r, f"{m.samples}_{side}")
        if not len(samples):
            samples = np.asarray([float(r[f"{m.median}_{side}"])])
        sides.append((processes, samples, _floats(r, f"{m.process_calibration}_{side}")))
    per_process = min(len(sides[0][0]), len(sides[1][0])) >= 3
    what = ("" if metric == "wall" else "CPU-time ") + (
        "process medians" if per_process else "samples"
    )
    own_refs = run_scales is not None and all(len(ref) == len(p) > 0 for p, _, ref in sides)
    values = []
    for i, (processes, samples, ref) in enumerate(sides):
        v = processes if per_process else samples
        if own_refs:
            v = v / ref if per_process else v / np.median(ref)
        elif run_scales is not None:
            v = v / run_scales[i]
        values.append(v)
    if run_scales is not None:
        what += ", per-case calibration" if own_refs else ", per-run reference"
    return Values(values[0], values[1], what, per_process)


def _checked(reason: object) -> bool:
    return not check_failed(reason)


def _percent(ratio: float) -> str:
    return "inf" if math.isinf(ratio) else f"{(ratio - 1) * 100:+.0f}%"


def _side_row(r: pd.Series, side: str) -> dict:
    """One side's stored row out of the merged one (columns without their suffix)."""
    suffix = f"_{side}"
    return {c[: -len(suffix)]: v for c, v in r.items() if isinstance(c, str) and c.endswith(suffix)}


def _warnings(
    r: pd.Series, a: np.ndarray, b: np.ndarray, what: str, settings: CompareSettings,
    run_calibrations: tuple[float | None, float | None],
) -> list[str]:  # fmt: skip
    """Why the time verdict of this case cannot be trusted ([] when it can)."""
    found = []
    for side, values, run_calibration in (
        ("baseline", a, run_calibrations[0]),
        ("new", b, run_calibrations[1]),
    ):
        row = _side_row(r, "base" if side == "baseline" else "new")
        warning = stability.spread_warning(stability.spread(values), f"{side}'s {what}")
        found += [warning] if warning else []
        conditions = stability.condition_warnings(row, settings.metric, run_calibration)
        found += [f"{side}: {w}" for w in conditions]
    m = METRICS[settings.metric]
    canary = stability.baseline_warning(
        _floats(r, f"{m.process_calibration}_base"),
        _floats(r, f"{m.process_calibration}_new"),
        settings.normalise,
    )
    return found + ([canary] if canary else [])


def _judge(
    r: pd.Series, settings: CompareSettings, run_scales: tuple[float, float] | None,
    run_calibrations: tuple[float | None, float | None],
) -> dict:  # fmt: skip
    """The verdict of one case, with its statistics where both sides measured it."""
    base, new = r["status_base"], r["status_new"]
    if r["_merge"] != "both":
        one_sided = r["_merge"] == "right_only"
        return dict(
            verdict=Verdict.NEW if one_sided else Verdict.MISSING,
            why=f"only in the new run ({new})" if one_sided else f"only in the baseline ({base})",
        )
    if base != Status.OK or new != Status.OK:
        # a case that runs again but gives wrong results is not fixed
        checked = _checked(r.get("reason_new"))
        new_text = new if checked else f"{new} (CHECK FAILED)"
        word = Verdict.FIXED if new == Status.OK and checked else Verdict.UNMEASURED
        if base == Status.OK and new in FAILED:
            word = Verdict.REGRESSED
        return dict(verdict=word, why=f"{base} -> {new_text}")
    tol = settings.tolerances
    a, b, what, per_process = time_values(r, run_scales, settings.metric)
    t = verdict_time(a, b, tol)
    memory_ratio, memory_word = verdict_memory(
        r["peak_mem_bytes_base"], r["peak_mem_bytes_new"], r["device"], tol
    )
    test = (
        f"p={t.p:.2g}, {len(a)} vs {len(b)} {what}"
        if t.enough_samples
        else (f"medians only: {len(a)} vs {len(b)} {what} are too few for the test")
    )
    why = [f"time {_percent(t.ratio)} ({test})"]
    word = t.verdict
    unsure = _warnings(r, a, b, what, settings, run_calibrations)
    if not per_process and word != Verdict.SAME:
        unsure.append(
            "too few processes: samples from one process share its moment (use --processes 5)"
        )
    if unsure and not settings.strict:
        word = Verdict.INCONCLUSIVE
        why += unsure
    elif unsure:
        why.append("strict: " + "; ".join(unsure))
    if memory_word != Verdict.SAME:
        why.append(f"memory {_percent(memory_ratio)}")
    if memory_word == Verdict.REGRESSED:
        word = Verdict.REGRESSED
    if _checked(r.get("reason_base")) and not _checked(r.get("reason_new")):
        word = Verdict.REGRESSED
        why.insert(0, "check failed now")
    return dict(
        verdict=word, why="; ".join(why), time_ratio=t.ratio, time_ci_low=t.ci_low,
        time_ci_high=t.ci_high, time_p=t.p, memory_ratio=memory_ratio,
    )  # fmt: skip


COLUMNS = ["backend", "pass", "seq_len", "status_base", "status_new", "time_base_ms",
           "time_new_ms", "time_ratio", "time_ci_low", "time_ci_high", "time_p", "memory_base",
           "memory_new", "memory_ratio", "verdict", "why",
           "batch", "heads", "head_dim", "dtype", "seed", "q_len", "kv_heads", "documents",
           "causal", "inputs", "device"]  # fmt: skip
RENAMED = {"label": "backend", "time_median_ms_base": "time_base_ms",
           "time_median_ms_new": "time_new_ms", "peak_mem_bytes_base": "memory_base",
           "peak_mem_bytes_new": "memory_new"}  # fmt: skip


def compare_runs(
    base: pd.DataFrame,
    new: pd.DataFrame,
    settings: CompareSettings,
    run_calibrations: tuple[float | None, float | None] = (None, None),
) -> pd.DataFrame:
    """One row per case on either side (matched on the case key, the seed left out where each
    run has one: ``runs.matching_key``), in the base run's order, cases
    only in the new run last. ``time_*_ms`` are the stored medians of the judged metric;
    ``time_ratio`` is of the compared values' medians (see ``time_values``).
    ``run_calibrations`` are the runs' calibration times in that metric
    (``runs.calibration_ms``): the divisors where ``settings.normalise`` and rows lack their
    own, and what the ``calibration`` rule measures each case's against.
    """
    run_scales = None
    if settings.normalise:
        if run_calibrations[0] is None or run_calibrations[1] is None:
            raise ValueError("normalising needs both runs' calibration times")
        run_scales = (run_calibrations[0], run_calibrations[1])
    # a resumed run may repeat a case: its last row stands
    keys = matching_key(base, new, free=("seed",))
    base = base.drop_duplicates(keys, keep="last").assign(_order=lambda d: np.arange(len(d)))
    new = new.drop_duplicates(keys, keep="last").assign(_order=lambda d: np.arange(len(d)))
    m = base.merge(new, on=keys, how="outer", suffixes=("_base", "_new"), indicator=True)
    m["label"] = m["label_new"].where(m["label_new"].notna(), m["label_base"])
    m = m.sort_values(["_order_base", "_order_new"], na_position="last").reset_index(drop=True)
    rows = [_judge(r, settings, run_scales, run_calibrations) for _, r in m.iterrows()]
    judged = pd.DataFrame(rows, index=m.index, columns=[
        "verdict", "why", "time_ratio", "time_ci_low", "time_ci_high", "time_p", "memory_ratio",
    ])  # fmt: skip
    metric = METRICS[settings.metric]
    renamed = {**RENAMED, f"{metric.median}_base": "time_base_ms",
               f"{metric.median}_new": "time_new_ms"}  # fmt: skip
    if metric.name != "wall":
        m = m.drop(columns=["time_median_ms_base", "time_median_ms_new"])
    m = m.drop(columns=["backend"])  # the table names a case by its label (with its parameters)
    return pd.concat([m, judged], axis=1).rename(columns=renamed).reindex(columns=COLUMNS)


def regressed(table: pd.DataFrame) -> bool:
    """True when any case regressed (the compare command then exits 1)."""
    return bool((table["verdict"] == Verdict.REGRESSED).any())


def outcome(table: pd.DataFrame) -> Outcome:
    """REGRESSED when a case regressed; else INCONCLUSIVE when a case could not be decided;
    else PASSED."""
    if regressed(table):
        return Outcome.REGRESSED
    undecided = (table["verdict"] == Verdict.INCONCLUSIVE).any()
    return Outcome.INCONCLUSIVE if undecided else Outcome.PASSED
