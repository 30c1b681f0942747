from __future__ import annotations

import time

import pytest

from harness.measure.timing import TimingSettings, WarmUp, measure, median_iqr, warm_up


def test_median_and_iqr():
    assert median_iqr([5.0, 1.0, 3.0, 2.0, 4.0]) == (3.0, 2.0)
    assert median_iqr([7.0]) == (7.0, 0.0)


def test_cpu_timer_measures_the_call_and_repeats():
    calls = []

    def call():
        calls.append(1)
        time.sleep(0.005)

    settings = TimingSettings(warmup_s=0.01, min_time_s=0.05, min_repeats=4, sample_s=0.001)
    samples, _ = measure(call, "cpu", settings)
    assert len(samples.wall) == len(samples.cpu) >= 4
    assert len(calls) >= len(samples.wall) + 2  # warm-up calls came first
    assert 0.005 <= median_iqr(samples.wall)[0] < 0.05
    assert median_iqr(samples.cpu)[0] < 0.002  # sleeping takes no CPU time


def test_short_calls_are_batched_per_sample():
    calls = []
    settings = TimingSettings(warmup_s=0.01, min_time_s=0.01, min_repeats=2, sample_s=0.01)
    samples, _ = measure(lambda: calls.append(1), "cpu", settings)
    assert len(calls) > 10 * len(samples.wall)  # many calls per sample amortise the timer
    assert median_iqr(samples.wall)[0] == pytest.approx(0, abs=1e-4)


def test_a_slow_call_still_gets_three_samples():
    settings = TimingSettings(warmup_s=0, warmup_calls=1, min_time_s=0, min_repeats=5,
                              max_time_s=0.001)  # fmt: skip
    samples, _ = measure(lambda: time.sleep(0.002), "cpu", settings)
    assert len(samples.wall) == 3


def test_warm_up_lasts_until_two_calls_agree():
    durations = iter([0.2, 0.1, 0.05, 0.02, 0.02, 0.02, 0.02, 0.02])  # compiling, then settling

    def call():
        time.sleep(next(durations))

    warm = warm_up(call, "cpu", TimingSettings(warmup_s=0, warmup_calls=2, stable_within=0.5))
    assert 5 <= warm.calls <= 7  # 0.02 after 0.02 is the first pair that agrees within 50%
    assert warm.stable(0.5) and not WarmUp((0.05, 0.02)).stable(0.5)


def test_warm_up_counts_what_the_caller_did_and_stops_at_max_time():
    settings = TimingSettings(warmup_s=0, warmup_calls=2, stable_within=0.01, max_time_s=0.05)
    warm = warm_up(lambda: time.sleep(0.004), "cpu", settings, WarmUp((0.03,)))
    assert warm.durations[0] == 0.03 and warm.calls >= 2
    assert warm.spent < 0.05 + 0.02  # never agreeing within 1%: stopped by max_time_s
    settle = TimingSettings(warmup_s=0, stable_within=0.0, settle_s=0.03, max_time_s=60)
    warm = warm_up(lambda: time.sleep(0.004), "cpu", settle, WarmUp((1.0,)))
    assert sum(warm.durations[1:]) < 0.03 + 0.02  # the long first call does not count
    calls = []
    warm = warm_up(lambda: calls.append(1), "cpu", settings, WarmUp((0.001, 0.001)))
    assert warm.calls == 2 and calls == []  # already warm: no more calls


def test_cpu_time_counts_the_work_not_the_waiting():
    def spin_then_sleep():
        end = time.process_time() + 0.004  # 4 ms of CPU time, however busy the machine
        while time.process_time() < end:
            pass
        time.sleep(0.004)

    settings = TimingSettings(warmup_s=0.01, min_time_s=0.05, min_repeats=5, sample_s=0.001)
    samples, _ = measure(spin_then_sleep, "cpu", settings)
    wall, cpu = median_iqr(samples.wall)[0], median_iqr(samples.cpu)[0]
    assert wall >= 0.008 and 0.004 <= cpu < 0.0065 < wall
