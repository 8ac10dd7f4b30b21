"""Counters and histograms that the daemons update where things happen, at the cost of a
dict update: no lock, no import of prometheus_client.

They are plain values: `backendai/metrics_export.py` turns them into prometheus_client
metric families when `/metrics` is scraped (a daemon loads prometheus_client only
then: it costs ~2.7 MB of RSS, docs/METRICS.md). Everything that updates them runs on
the daemon's event loop, as does the scrape, so no lock is needed.

Labels are tuples of strings in the order the metric declares; callers pass bounded
values only (enum words, configured names, method names), never ids or pids.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

# Seconds: from a quick local step (~1 ms) to a long wave or download (2 h).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


class CounterVec:
    """Monotonic counts by label values."""

    __slots__ = ("labels", "values")

    def __init__(self, *labels: str) -> None:
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"expected labels {self.labels}, got {label_values}")
        if not amount >= 0:  # also refuses NaN
            raise ValueError(f"a counter only goes up, got {amount!r}")
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def get(self, *label_values: str) -> float:
        return self.values.get(label_values, 0.0)

    def items(self) -> Iterator[tuple[tuple[str, ...], float]]:
        return iter(sorted(self.values.items()))


class HistogramData:
    """One label set's observations: counts per bucket (not cumulative), sum, count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out


class HistogramVec:
    """Observations in fixed buckets (upper bounds, seconds for durations) by labels."""

    __slots__ = ("bounds", "labels", "values")

    def __init__(self, *labels: str, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        if not buckets or list(buckets) != sorted(set(buckets)) or \
                not all(math.isfinite(b) for b in buckets):
            raise ValueError("buckets must be finite, increasing and not empty")
        self.labels = labels
        self.bounds = buckets
        self.values: dict[tuple[str, ...], HistogramData] = {}

    def observe(self, value: float, *label_values: str) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"expected labels {self.labels}, got {label_values}")
        if not math.isfinite(value):
            return  # a clock gone wrong must not poison the sum
        data = self.values.get(label_values)
        if data is None:
            data = self.values[label_values] = HistogramData(len(self.bounds) + 1)
        data.buckets[bisect.bisect_left(self.bounds, value)] += 1
        data.sum += value
        data.count += 1

    def get(self, *label_values: str) -> HistogramData | None:
        return self.values.get(label_values)

    def items(self) -> Iterator[tuple[tuple[str, ...], HistogramData]]:
        return iter(sorted(self.values.items()))
