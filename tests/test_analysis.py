import numpy as np
import pandas as pd
import pytest

from harness.analyse import analysis
from harness.analyse.analysis import crossover, fit_power
from harness.store import storage
from harness.store.facts import Promise
from harness.store.records import Status
from tests.synthetic_runs import LENGTHS, NAIVE, Series, write_run


@pytest.fixture
def run(tmp_path) -> pd.DataFrame:
    return storage.read_results(write_run(tmp_path / "run"))


def test_fit_recovers_a_known_exponent_with_its_uncertainty():
    n = np.array(LENGTHS, dtype=float)
    exact = fit_power(n, 3e-6 * n**1.7)
    assert exact.slope == pytest.approx(1.7) and exact.stderr == pytest.approx(0, abs=1e-9)
    assert exact.points == 6 and exact.lengths == (512, 16384)
    rng = np.random.default_rng(0)
    noisy = fit_power(n, n**1.7 * rng.lognormal(0, 0.1, n.size))
    assert abs(noisy.slope - 1.7) < 3 * noisy.stderr and noisy.stderr > 0.005


def test_fit_needs_two_lengths_and_drops_non_positive_values():
    assert fit_power([1024], [1.0]) is None
    two = fit_power([1024, 2048], [1.0, 4.0])
    assert two.slope == pytest.approx(2.0) and two.stderr is None and "2 points" in two.text()
    assert fit_power([512, 1024, 2048], [0.0, 1.0, 2.0]).points == 2


def test_exponents_and_the_memory_flag(run):
    e = analysis.exponents(run).set_index(["label", "pass"])
    naive = e.loc[("full-naive", "fwd")]
    assert naive["time"].slope == pytest.approx(2.0) and naive["memory"].slope == pytest.approx(2)
    assert naive["time"].lengths == (512, 8192)  # out of memory at 16K: not fitted
    assert naive["promise"] == "O(n²)" and naive["promised"] == pytest.approx(2.0)
    lf = e.loc[("longformer(window=256)", "fwdbwd")]
    assert lf["time"].slope == pytest.approx(1.0) and lf["memory_tail"].slope == pytest.approx(1)
    assert not e.loc[("full-sdpa", "fwd"), "flag"] and not lf["flag"]
    leaky = e.loc[("bigbird(block_size=64)", "fwd")]
    assert leaky["memory"].slope == pytest.approx(1.5) and leaky["flag"]


def test_n_log_n_promises_a_slope_a_little_above_one():
    slope = analysis.promised_exponent(Promise(1, log=True), np.array(LENGTHS))
    assert 1.05 < slope < 1.2


def cross(run, label, reference, pass_="fwd"):
    c = analysis.crossovers(run)
    row = c[(c["label"] == label) & (c["reference"] == reference) & (c["pass"] == pass_)]
    assert len(row) == 1
    return row.iloc[0]


def test_crossovers_at_known_lengths(run):
    lf = "longformer(window=256)"
    vs_sdpa = cross(run, lf, "full-sdpa")
    assert vs_sdpa["time"].first == 4096 and vs_sdpa["time"].estimate == pytest.approx(3072)
    assert vs_sdpa["memory"].first is None
    assert vs_sdpa["memory"].text() == "not within 512–16384"
    vs_naive = cross(run, lf, "full-naive", "fwdbwd")
    assert vs_naive["time"].first == 1024 and vs_naive["time"].estimate == pytest.approx(768)
    assert vs_naive["memory"].first == 1024 and vs_naive["memory"].estimate == pytest.approx(896)
    assert vs_naive["time"].reference_failed == (16384,)  # naive ran out of memory there
    bigbird = cross(run, "bigbird(block_size=64)", "full-sdpa")
    assert bigbird["time"].first == 2048 and bigbird["time"].estimate == pytest.approx(1536)
    # less memory at 512 and 1024 only: not a crossover, since it does not stay below
    assert bigbird["memory"].first is None
    # full backends are references, not compared with each other
    assert set(analysis.crossovers(run)["label"]) == {lf, "bigbird(block_size=64)"}


def test_a_reference_that_fails_counts_as_beaten(tmp_path):
    slow = Series("reformer", "reformer", {}, 2.0, 80.0, 1.0, 1e6)  # slower than naive throughout
    df = storage.read_results(write_run(tmp_path / "r", series=(NAIVE, slow), passes=("fwd",)))
    c = cross(df, "reformer", "full-naive")
    assert c["time"].first == 16384 and c["time"].estimate is None
    assert "reference did not finish" in c["time"].text()


def test_crossover_when_winning_everywhere_or_nowhere():
    lengths, status = [512, 1024], [Status.OK, Status.OK]
    assert crossover(lengths, [1, 1], [2, 2], status).first == 512
    assert "every length" in crossover(lengths, [1, 1], [2, 2], status).text()
    assert crossover(lengths, [3, 3], [2, 2], status).text() == "not within 512–1024"
    assert crossover([], [], [], []).text() == "no common lengths"


def test_relative_to_a_reference(run):
    rel = analysis.relative_to(run, "full-sdpa")
    at = rel[(rel["label"] == "longformer(window=256)") & (rel["pass"] == "fwd")]
    at = at.set_index("seq_len")
    x = np.array(LENGTHS) / 1024
    assert np.allclose(at["speedup"].loc[list(LENGTHS)], 10 * x**2 / (30 * x))
    assert np.allclose(at["memory_saving"].loc[list(LENGTHS)], 2 * x / (28 * x), rtol=1e-3)
    assert "full-sdpa" not in set(rel["label"])
    assert analysis.relative_to(run, "no-such-backend").empty


def test_rates_divide_useful_flops_by_the_median_time(run):
    df = analysis.with_rates(run, "NVIDIA H100 80GB HBM3")
    row = df[(df["backend"] == "full-sdpa") & (df["pass"] == "fwd") & (df["seq_len"] == 2048)]
    row = row.iloc[0]
    flops = 4 * 1 * 4 * 64 * 2048**2
    assert row["flops"] == flops
    assert row["tflops"] == pytest.approx(flops / (row["time_median_ms"] / 1e3) / 1e12)
    assert row["peak_fraction"] == pytest.approx(row["tflops"] / 989, rel=0.01)
    failed = df[df["status"] != Status.OK]
    assert failed["tflops"].isna().all()
    assert analysis.with_rates(run, "AMD EPYC")["peak_fraction"].isna().all()


def test_latest_keeps_the_last_row_of_a_repeated_case(run):
    again = pd.concat([run, run.iloc[[0]].assign(time_median_ms=1.0)])
    kept = analysis.latest(again)
    assert len(kept) == len(run)
    first = run.iloc[0]
    same = kept[
        (kept["label"] == first["label"])
        & (kept["pass"] == first["pass"])
        & (kept["seq_len"] == first["seq_len"])
    ]
    assert same["time_median_ms"].tolist() == [1.0]


def test_an_approximation_is_compared_with_full_attention_not_used_as_its_reference(tmp_path):
    """Linformer is no sparse pattern (its rows say sparse False), yet not exact attention
    either: it is measured against the full-attention backends like the sparse ones, and
    nothing is measured against it."""
    linformer = Series("linformer", "linformer", {}, 1.0, 5.0, 1.0, 1e6)
    df = storage.read_results(write_run(tmp_path / "r", series=(NAIVE, linformer), passes=("fwd",)))
    assert not df.loc[df["backend"] == "linformer", "sparse"].astype(bool).any()
    c = analysis.crossovers(df)
    assert set(c["label"]) == {"linformer"} and set(c["reference"]) == {"full-naive"}
