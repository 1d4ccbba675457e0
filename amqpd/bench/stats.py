"""Percentiles of latency samples and min/median/max over repeats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Percentile of already sorted values, interpolating between ranks.

    ``fraction`` is in [0, 1]; 0.999 is the 99.9th percentile. The value
    sits at rank ``fraction * (n - 1)``, linearly between its two
    neighbours, which is numpy's default ("linear") method.
    """
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    return float(ordered[low]) * (1.0 - weight) + float(ordered[high]) * weight


LATENCY_POINTS = {"p50": 0.5, "p99": 0.99, "p999": 0.999}


def latency_ms(samples_ns: Iterable[int]) -> dict[str, float]:
    """p50, p99 and p99.9 in milliseconds of nanosecond samples.

    Returns an empty dict when there are no samples.
    """
    ordered = sorted(samples_ns)
    if not ordered:
        return {}
    return {
        name: percentile(ordered, fraction) / 1e6
        for name, fraction in LATENCY_POINTS.items()
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of one figure's values over the repeats."""
    if not values:
        raise ValueError("spread of no values")
    return {
        "min": float(min(values)),
        "median": float(statistics.median(values)),
        "max": float(max(values)),
    }


def rate(count: int, start_ns: int, end_ns: int) -> float:
    """Events per second between two monotonic times (0 if no time passed)."""
    elapsed = (end_ns - start_ns) / 1e9
    return count / elapsed if elapsed > 0 else 0.0
