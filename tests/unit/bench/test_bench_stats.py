"""Percentiles, spreads over repeats, rates, and /proc readings."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.bench.procstat import ProcSample, cpu_percent, load_average, machine, sample
from amqpd.bench.stats import latency_ms, percentile, rate, spread


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0.0) == 10.0
    assert percentile(values, 1.0) == 40.0
    assert percentile(values, 0.5) == 25.0  # rank 1.5
    assert percentile(values, 0.25) == pytest.approx(17.5)  # rank 0.75


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 0.999) == 7.0


def test_percentile_refuses_nothing_and_bad_fractions() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 99.0)


@given(st.lists(st.integers(-(10**9), 10**9), min_size=1), st.floats(0, 1))
def test_percentile_stays_within_the_data_and_grows(
    values: list[int], fraction: float
) -> None:
    ordered = sorted(values)
    got = percentile(ordered, fraction)
    slack = 1e-6 * max(1, abs(ordered[0]), abs(ordered[-1]))  # float rounding
    assert ordered[0] - slack <= got <= ordered[-1] + slack
    assert percentile(ordered, min(1.0, fraction + 0.01)) >= got - slack


def test_latency_ms_of_a_thousand_samples() -> None:
    samples = [i * 1_000_000 for i in range(1, 1001)]  # 1 ms .. 1000 ms, shuffled
    samples.reverse()
    got = latency_ms(samples)
    assert got["p50"] == pytest.approx(500.5)
    assert got["p99"] == pytest.approx(990.01)
    assert got["p999"] == pytest.approx(999.001)
    assert latency_ms([]) == {}


def test_spread_is_min_median_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([1.0, 4.0]) == {"min": 1.0, "median": 2.5, "max": 4.0}
    with pytest.raises(ValueError):
        spread([])


def test_rate_is_per_second_and_zero_without_time() -> None:
    assert rate(500, 0, 250_000_000) == 2000.0
    assert rate(5, 10, 10) == 0.0


def test_procstat_reads_this_process() -> None:
    first = sample(os.getpid())
    sum(range(200_000))
    second = sample(os.getpid())
    assert second.cpu_s >= first.cpu_s
    assert 1 << 20 < second.rss_bytes < 1 << 40
    assert len(load_average()) == 3
    info = machine()
    assert info["nproc"] == os.cpu_count()


def test_cpu_percent_is_of_one_core() -> None:
    before = ProcSample(cpu_s=1.0, rss_bytes=0, at=10.0)
    after = ProcSample(cpu_s=2.5, rss_bytes=0, at=11.0)
    assert cpu_percent(before, after) == 150.0
    assert cpu_percent(after, after) == 0.0
