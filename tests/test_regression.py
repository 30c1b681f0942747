"""The statistics of ``run_bench.py compare``: known p-values, a bootstrap that covers the truth,
no false alarms on A/A noise, and planted slowdowns, memory growth and status changes caught."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from harness.analyse.regression import compare_runs, regressed
from harness.analyse.regression import outcome as regression_outcome
from harness.analyse.rules import CompareSettings, Tolerances, Verdict, parse_fraction
from harness.analyse.significance import (
    _u_counts,
    bootstrap_ratio_ci,
    mann_whitney_p,
    verdict_memory,
    verdict_time,
)
from harness.store import storage
from harness.store.records import CaseResult, Status

TOL = Tolerances()
# the statistics alone, as these tests' synthetic rows have no conditions and few processes
STRICT = CompareSettings(strict=True)
NORMALISED = CompareSettings(normalise=True, strict=True)
MiB = 2**20


def test_exact_mann_whitney_known_values():
    # complete separation of 5 and 5: 2 of the C(10, 5) = 252 orderings are as extreme
    assert mann_whitney_p(range(1, 6), range(6, 11)) == pytest.approx(2 / 252, rel=1e-12)
    assert mann_whitney_p(range(6, 11), range(1, 6)) == pytest.approx(2 / 252, rel=1e-12)
    # reference values: scipy.stats.mannwhitneyu(a, b, method="exact") (scipy 1.17.1)
    assert mann_whitney_p([1, 2, 4, 7, 9], [3, 5, 6, 8, 10, 11]) == pytest.approx(
        0.24675324675324672, rel=1e-9
    )
    a = [1.1, 2.3, 4.0, 7.2, 9.9, 12.0, 13.5]
    b = [3.3, 5.1, 6.6, 8.0, 10.2, 11.4, 14.8, 15.0, 16.1]
    assert mann_whitney_p(a, b) == pytest.approx(0.2522727272727273, rel=1e-9)
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0  # ties: the approximation, p = 1
    assert mann_whitney_p([4.0, 5.0, 6.0], [4.5, 5.5, 6.5]) == pytest.approx(0.7)  # exact, 14/20
    for n, m in [(1, 1), (3, 4), (6, 6), (10, 10)]:  # a distribution over every ordering
        assert sum(_u_counts(n, m)) == math.comb(n + m, n)


def test_approximate_mann_whitney_known_values():
    # reference values: scipy.stats.mannwhitneyu(a, b, method="asymptotic") (scipy 1.17.1),
    # which applies the tie and continuity corrections
    assert mann_whitney_p(range(1, 12), range(12, 23)) == pytest.approx(8.151536127743244e-05)
    ties_a, ties_b = [1, 2, 2, 3, 3, 3, 4, 5], [3, 4, 4, 5, 5, 6, 6, 7, 8]
    assert mann_whitney_p(ties_a, ties_b) == pytest.approx(0.006373133838085873)
    assert mann_whitney_p([3, 3, 3, 3], [3, 3, 3, 3]) == 1.0
    same = np.random.default_rng(0).lognormal(0, 0.05, 50)
    assert mann_whitney_p(same, same) == 1.0
    with pytest.raises(ValueError):
        mann_whitney_p([], [1.0])


def test_bootstrap_ci_covers_the_true_ratio_and_is_deterministic():
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a, b = rng.lognormal(0, 0.05, 10), 1.2 * rng.lognormal(0, 0.05, 10)
        low, high = bootstrap_ratio_ci(a, b, seed=seed)
        assert low < high
        covered += low <= 1.2 <= high
    assert covered >= 0.9 * 200  # nominal 95% (measured: 189 of 200)
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0, 0.05, 20), rng.lognormal(0, 0.05, 20)
    assert bootstrap_ratio_ci(a, b, seed=3) == bootstrap_ratio_ci(a, b, seed=3)
    assert bootstrap_ratio_ci(a, b, seed=3) != bootstrap_ratio_ci(a, b, seed=4)
    low, high = bootstrap_ratio_ci(a, b, level=0.5)
    wide_low, wide_high = bootstrap_ratio_ci(a, b, level=0.99)
    assert wide_low < low < high < wide_high


def _verdicts(factor: float, samples: int = 10, cases: int = 200) -> Counter:
    """Verdicts over ``cases`` synthetic cases, each ``samples`` lognormal (sigma 5%) draws a
    side, the new side ``factor`` times slower."""
    rng = np.random.default_rng(0)
    counts: Counter = Counter()
    for _ in range(cases):
        a = rng.lognormal(0, 0.05, samples)
        b = factor * rng.lognormal(0, 0.05, samples)
        counts[verdict_time(a, b, TOL).verdict] += 1
    return counts


def test_no_false_alarms_on_a_and_a_noise():
    counts = _verdicts(1.0)
    assert counts["regressed"] == 0  # measured: 198 same, 1 slower, 1 faster
    assert counts["same"] >= 190


def test_planted_slowdown_is_caught():
    counts = _verdicts(1.25)
    assert counts["regressed"] >= 198  # measured: 200 of 200


def test_slowdown_within_tolerance_is_slower_not_regressed():
    counts = _verdicts(1.05, samples=30)
    assert counts["regressed"] == 0  # measured: 160 slower, 40 same
    assert counts["slower"] > counts["same"]
    # with 10 samples the medians alone are ~3% uncertain, so a 5% slowdown whose median
    # lands beyond 10% is caught now and then (measured: 9 of 200), still mostly not
    assert _verdicts(1.05)["regressed"] <= 20


def test_faster_and_verdict_fields():
    rng = np.random.default_rng(5)
    a = rng.lognormal(0, 0.05, 15)
    v = verdict_time(a, 0.7 * rng.lognormal(0, 0.05, 15), TOL)
    assert v.verdict == "faster" and v.enough_samples
    assert v.ci_high < 1 and v.p < TOL.alpha and v.ratio == pytest.approx(0.7, rel=0.05)
    # complete separation of 5 and 5 reaches p = 2/252 < 0.01: tested, not just compared
    five = verdict_time([10, 10.1, 10.2, 10.3, 10.4], [13, 13.1, 13.2, 13.3, 13.4], TOL)
    assert five.enough_samples and five.verdict == "regressed" and five.p == pytest.approx(2 / 252)


def test_too_few_samples_decide_on_the_medians():
    for a, b in [([10.0, 10.2], [12.5, 12.6]), ([10.0, 10.1, 10.2], [12.5, 12.6, 12.7])]:
        # 3 vs 3 cannot reach p < 0.01 (p >= 0.1) and would always say "same"
        v = verdict_time(a, b, TOL)
        assert not v.enough_samples and math.isnan(v.p) and math.isnan(v.ci_low)
        assert v.verdict == "regressed"
    assert verdict_time([10.0], [10.5], TOL).verdict == "same"
    assert verdict_time([10.0], [8.0], TOL).verdict == "faster"


def test_memory_rules_on_cpu_and_cuda():
    # CPU: RSS has page-level slack; 1 MiB is under the 2 MiB floor, 10% is over 5%
    assert verdict_memory(10 * MiB, 11 * MiB, "cpu", TOL) == (pytest.approx(1.1), "same")
    assert verdict_memory(100 * MiB, 110 * MiB, "cpu", TOL)[1] == "regressed"
    assert verdict_memory(100 * MiB, 104 * MiB, "cpu", TOL)[1] == "same"
    assert verdict_memory(100 * MiB, 90 * MiB, "cpu", TOL)[1] == "leaner"
    assert verdict_memory(0, 1 * MiB, "cpu", TOL)[1] == "same"
    # CUDA: the allocator's peak is deterministic, anything beyond 1% counts
    assert verdict_memory(100 * MiB, 101 * MiB + 1, "cuda", TOL)[1] == "regressed"
    assert verdict_memory(100 * MiB, 100 * MiB + MiB // 2, "cuda:0", TOL)[1] == "same"
    assert verdict_memory(100 * MiB, 98 * MiB, "cuda", TOL)[1] == "leaner"
    assert verdict_memory(10 * MiB, 11 * MiB, "cuda", TOL)[1] == "regressed"
    ratio, word = verdict_memory(float("nan"), 5 * MiB, "cuda", TOL)
    assert math.isnan(ratio) and word == "same"


def _case(label: str, time: float = 10.0, seed: int = 0, n: int = 1024, status: str = Status.OK,
          mem: int = 64 * MiB, device: str = "cpu", reason: str = "",
          processes: list[float] = (), refs: list[float] = (), **extra) -> CaseResult:  # fmt: skip
    ok = status == Status.OK
    samples = time * np.random.default_rng(seed).lognormal(0, 0.02, 10)
    return CaseResult(
        backend=label, family="full", label=label, params="{}", seq_len=n, pass_="fwd", batch=1,
        heads=4, head_dim=64, dtype="float32", device=device, seed=0, q_len=n, kv_heads=4,
        documents=1, causal=False, inputs="gaussian", status=status,
        reason=reason or ("" if ok else f"{status} at {n}"),
        time_median_ms=float(np.median(samples)) if ok else None,
        time_samples_ms=" ".join(f"{s:.4f}" for s in samples) if ok else "",
        peak_mem_bytes=mem if ok else None,
        process_medians_ms=" ".join(map(str, processes)),
        process_calibration_ms=" ".join(map(str, refs)),
        **extra,
    )  # fmt: skip


def _run(tmp_path, name: str, cases: list[CaseResult]) -> pd.DataFrame:
    """Written and read back exactly as a sweep's results.csv."""
    out = tmp_path / name
    out.mkdir()
    for c in cases:
        storage.append_result(out, c)
    return storage.read_results(out)


def test_status_changes_and_order(tmp_path):
    base = _run(tmp_path, "base", [
        _case("steady", seed=1), _case("breaks", seed=2), _case("mends", status=Status.OOM),
        _case("both-fail", status=Status.OOM), _case("dropped"), _case("wrong", seed=3),
        _case("steady", n=2048, seed=4), _case("wrong-again", status=Status.OOM),
    ])  # fmt: skip
    new = _run(tmp_path, "new", [
        _case("added"), _case("steady", n=2048, seed=5), _case("wrong", seed=6,
        reason="CHECK FAILED: max error 0.1"), _case("both-fail", status=Status.TIMEOUT),
        _case("mends"), _case("breaks", status=Status.OOM), _case("steady", seed=7),
        _case("wrong-again", reason="CHECK FAILED: max error 0.2"),
    ])  # fmt: skip
    table = compare_runs(base, new, STRICT)
    assert list(zip(table["backend"], table["seq_len"], table["verdict"], strict=True)) == [
        ("steady", 1024, "same"), ("breaks", 1024, "regressed"), ("mends", 1024, "fixed"),
        ("both-fail", 1024, Verdict.UNMEASURED), ("dropped", 1024, "missing"),
        ("wrong", 1024, "regressed"), ("steady", 2048, "same"),
        ("wrong-again", 1024, Verdict.UNMEASURED), ("added", 1024, "new"),
    ]  # fmt: skip
    why = dict(zip(table["backend"], table["why"], strict=False))
    assert why["breaks"] == "ok -> oom" and why["mends"] == "oom -> ok"
    assert why["both-fail"] == "oom -> timeout" and why["wrong"].startswith("check failed now")
    assert why["wrong-again"] == "oom -> ok (CHECK FAILED)"  # runs again, wrongly: not fixed
    assert table.loc[0, "time_p"] > TOL.alpha and table.loc[0, "time_base_ms"] > 0
    assert regressed(table)
    assert not regressed(table[table["verdict"] != "regressed"])


def test_compare_runs_time_and_memory(tmp_path):
    # a run is on one device: the CPU case and the CUDA cases are two pairs of runs
    base = _run(tmp_path, "base", [_case("a", seed=1)])
    new = _run(tmp_path, "new", [_case("a", time=13.0, seed=4)])
    base_gpu = _run(tmp_path, "base-gpu", [_case("b", seed=2, device="cuda"),
                                           _case("c", seed=3, device="cuda")])  # fmt: skip
    new_gpu = _run(tmp_path, "new-gpu", [_case("b", seed=5, device="cuda", mem=66 * MiB),
                                         _case("c", seed=6, device="cuda", time=7.0,
                                               mem=60 * MiB)])  # fmt: skip
    table = pd.concat([compare_runs(base, new, STRICT), compare_runs(base_gpu, new_gpu, STRICT)])
    table = table.set_index("backend")
    assert table.loc["a", "verdict"] == "regressed"
    assert re.fullmatch(r"time \+[23]\d% \(p=[0-9.e-]+, 10 vs 10 samples\); strict: too few "
                        r"processes: .*", table.loc["a", "why"])  # fmt: skip
    assert table.loc["a", "time_ci_low"] > 1.1 and table.loc["a", "time_p"] < 1e-3
    assert table.loc["b", "verdict"] == "regressed" and "memory +3%" in table.loc["b", "why"]
    assert table.loc["b", "memory_ratio"] == pytest.approx(66 / 64)
    assert table.loc["c", "verdict"] == "faster" and "memory -6%" in table.loc["c", "why"]
    assert not regressed(compare_runs(base, base, STRICT))


def test_normalised_mode_cancels_machine_speed(tmp_path):
    base = _run(tmp_path, "base", [_case("a", seed=1), _case("b", n=2048, time=40.0, seed=2)])
    new = _run(tmp_path, "new", [_case("a", time=20.0, seed=3),
                                 _case("b", n=2048, time=80.0, seed=4)])  # fmt: skip
    raw = compare_runs(base, new, STRICT)
    assert list(raw["verdict"]) == ["regressed", "regressed"]
    normalised = compare_runs(base, new, NORMALISED, (1.5, 3.0))
    assert list(normalised["verdict"]) == ["same", "same"]
    assert normalised["time_ratio"].to_numpy() == pytest.approx(1.0, rel=0.05)
    assert normalised["time_new_ms"].to_numpy() == pytest.approx([20.0, 80.0], rel=0.05)


def test_process_medians_are_judged_not_their_samples(tmp_path):
    # each process's samples are tight, but the processes disagree by 20%: the samples alone
    # would make a 15% difference look certain; five process medians per side do not
    base = _run(tmp_path, "base", [_case("a", 10, 1, processes=[10, 12, 9.5, 11, 10.5])])
    new = _run(tmp_path, "new", [_case("a", 11.5, 2, processes=[11.5, 9.8, 12, 10.8, 11])])
    samples_only = compare_runs(base.assign(process_medians_ms=""),
                                new.assign(process_medians_ms=""), STRICT).loc[0]  # fmt: skip
    assert samples_only["verdict"] == "regressed" and "10 vs 10 samples" in samples_only["why"]
    row = compare_runs(base, new, STRICT).loc[0]
    assert row["verdict"] == "same" and "5 vs 5 process medians" in row["why"]
    slow = _run(tmp_path, "slow", [_case("a", 14, 3, processes=[14, 13.5, 14.5, 15, 13.8])])
    row = compare_runs(base, slow, STRICT).loc[0]
    assert row["verdict"] == "regressed" and row["time_ratio"] == pytest.approx(14 / 10.5)
    # fewer than three processes on either side: back to the samples
    two = _run(tmp_path, "two", [_case("a", time=11.5, seed=2, processes=[11.5, 11])])
    assert "samples" in compare_runs(base, two, STRICT).loc[0, "why"]


def test_per_case_reference_follows_the_machine_within_a_run(tmp_path):
    # the new run's case ran while the machine was 1.5x slower, and so did the calibration timed
    # next to it: divided by it, nothing changed; the run's reference, timed before and after
    # the sweep, missed the slow stretch
    base = _run(tmp_path, "base", [_case("a", processes=[10, 10.1, 9.9, 10.05, 9.95],
                                         refs=[20] * 5, seed=1)])  # fmt: skip
    slow = [15, 15.1, 14.9, 15.2, 14.8]
    new = _run(tmp_path, "new", [_case("a", processes=slow, refs=[30, 30.2, 29.8, 30.4, 29.6],
                                       seed=2)])  # fmt: skip
    assert compare_runs(base, new, STRICT).loc[0, "verdict"] == "regressed"
    row = compare_runs(base, new, NORMALISED, (20.0, 20.0)).loc[0]
    assert row["verdict"] == "same" and "per-case calibration" in row["why"]
    assert row["time_ratio"] == pytest.approx(1.0)
    # a run without per-case calibrations: both sides fall back to the runs' references
    old = _run(tmp_path, "old", [_case("a", processes=slow, seed=2)])
    row = compare_runs(base, old, NORMALISED, (20.0, 20.0)).loc[0]
    assert "per-run reference" in row["why"] and row["verdict"] == "regressed"


FIVE = [10, 10.1, 9.9, 10.05, 9.95]
SLOW = [13, 13.1, 12.9, 13.05, 12.95]


def test_unstable_conditions_make_a_time_verdict_inconclusive(tmp_path):
    judged = CompareSettings()
    base = _run(tmp_path, "base", [_case("a", processes=FIVE, refs=[20] * 5, seed=1)])
    slow = _run(tmp_path, "slow", [_case("a", 13, processes=SLOW, refs=[20] * 5, seed=2)])
    row = compare_runs(base, slow, judged).loc[0]
    assert row["verdict"] == "regressed" and "inconclusive" not in row["why"]
    assert regression_outcome(compare_runs(base, slow, judged)) == "regressed"
    # the same numbers, measured while other processes held 60% of the CPUs
    busy = _run(tmp_path, "busy", [_case("a", 13, processes=SLOW, refs=[20] * 5, seed=2,
                                         other_cpu=0.6)])  # fmt: skip
    table = compare_runs(base, busy, judged)
    assert table.loc[0, "verdict"] == "inconclusive"
    assert "new: busy: other processes used 60% of the CPUs" in table.loc[0, "why"]
    assert regression_outcome(table) == "inconclusive"
    assert compare_runs(base, busy, STRICT).loc[0, "verdict"] == "regressed"  # forced
    # an unchanged case is not "same" either on a busy machine: that could hide a regression
    calm = _run(tmp_path, "calm", [_case("a", processes=FIVE, refs=[20] * 5, seed=3,
                                         other_cpu=0.6)])  # fmt: skip
    assert compare_runs(base, calm, judged).loc[0, "verdict"] == "inconclusive"


def test_memory_growth_and_new_failures_are_judged_whatever_the_conditions(tmp_path):
    base = _run(tmp_path, "base", [_case("a", processes=FIVE, seed=1), _case("b", seed=2)])
    new = _run(tmp_path, "new", [
        _case("a", processes=FIVE, seed=3, mem=80 * MiB, other_cpu=0.9),
        _case("b", status=Status.OOM),
    ])  # fmt: skip
    table = compare_runs(base, new, CompareSettings()).set_index("backend")
    assert list(table["verdict"]) == ["regressed", "regressed"]
    assert "memory +25%" in table.loc["a", "why"] and "busy" in table.loc["a", "why"]


def test_the_reference_operation_says_when_machines_are_not_comparable(tmp_path):
    base = _run(tmp_path, "base", [_case("a", processes=FIVE, refs=[20] * 5, seed=1)])
    same_but_slow_machine = _run(tmp_path, "new", [
        _case("a", 20, processes=[2 * t for t in FIVE], refs=[40] * 5, seed=2)
    ])  # fmt: skip
    row = compare_runs(base, same_but_slow_machine, CompareSettings()).loc[0]
    assert row["verdict"] == "inconclusive"
    assert "not comparable: the calibration ran 2x slower" in row["why"]
    # normalising divides a 2x slower machine out, but trusts it only up to 1.5x
    row = compare_runs(base, same_but_slow_machine, CompareSettings(normalise=True), (20, 40)).loc[
        0
    ]
    assert row["verdict"] == "inconclusive"
    a_bit_slower = _run(tmp_path, "bit", [
        _case("a", 13, processes=[1.3 * t for t in FIVE], refs=[26] * 5, seed=3)
    ])  # fmt: skip
    row = compare_runs(base, a_bit_slower, CompareSettings(normalise=True), (20, 26)).loc[0]
    assert row["verdict"] == "same" and row["time_ratio"] == pytest.approx(1.0)


def test_spread_and_too_few_processes_are_inconclusive(tmp_path):
    base = _run(tmp_path, "base", [_case("a", processes=FIVE, seed=1)])
    wild = _run(tmp_path, "wild", [_case("a", 13, processes=[9, 13, 17, 12, 16], seed=2)])
    row = compare_runs(base, wild, CompareSettings()).loc[0]
    assert row["verdict"] == "inconclusive" and "spread: the IQR of the new's process" in row["why"]
    # one process a side: its samples' significance is unfounded, a difference is no verdict
    one = _run(tmp_path, "one", [_case("a", seed=1)])
    slow_one = _run(tmp_path, "slow-one", [_case("a", 13, seed=2)])
    row = compare_runs(one, slow_one, CompareSettings()).loc[0]
    assert row["verdict"] == "inconclusive" and "too few processes" in row["why"]
    assert compare_runs(one, _run(tmp_path, "same-one", [_case("a", seed=3)]),
                        CompareSettings()).loc[0, "verdict"] == "same"  # fmt: skip


def test_cpu_time_is_judged_where_asked(tmp_path):
    # wall time doubled in a slow stretch of the machine, CPU time hardly moved
    def case(wall, cpu, **kw):
        return _case("a", wall[2], processes=wall, refs=[20] * 5, threads=1,
                     cpu_median_ms=cpu[2], process_cpu_medians_ms=" ".join(map(str, cpu)),
                     cpu_samples_ms=" ".join(map(str, cpu)), process_calibration_cpu_ms="19 " * 5,
                     **kw)  # fmt: skip

    base = _run(tmp_path, "base", [case(FIVE, [8, 8.1, 7.9, 8.05, 7.95], seed=1)])
    slow = _run(tmp_path, "slow", [case([2 * t for t in FIVE], [8.1, 8.2, 7.9, 8.0, 8.15],
                                        seed=2)])  # fmt: skip
    assert compare_runs(base, slow, STRICT).loc[0, "verdict"] == "regressed"
    row = compare_runs(base, slow, CompareSettings(metric="cpu")).loc[0]
    assert row["verdict"] == "same" and "CPU-time process medians" in row["why"]
    assert row["time_new_ms"] == pytest.approx(7.9)  # the CPU time's median
    slower = _run(tmp_path, "slower", [case(FIVE, [10.1, 10.2, 9.9, 10, 10.05], seed=3)])
    assert (
        compare_runs(base, slower, CompareSettings(metric="cpu")).loc[0, "verdict"] == "regressed"
    )
    # a busy machine inflates CPU time too (caches emptied at every switch): no verdict
    busy = _run(tmp_path, "busy", [case(FIVE, [8, 8.1, 7.9, 8.05, 7.95], seed=4, other_cpu=0.8)])
    row = compare_runs(base, busy, CompareSettings(metric="cpu")).loc[0]
    assert row["verdict"] == "inconclusive" and "busy" in row["why"]


def test_tolerances_and_fractions():
    assert parse_fraction("10%") == pytest.approx(0.10)
    assert parse_fraction("0.01") == pytest.approx(0.01)
    for bad in ["-5%", "x", "nan"]:
        with pytest.raises(ValueError):
            parse_fraction(bad)
    with pytest.raises(ValueError):
        Tolerances(alpha=0)
    with pytest.raises(ValueError):
        Tolerances(time=-0.1)
    with pytest.raises(AttributeError):
        TOL.time = 0.2  # type: ignore[misc]
