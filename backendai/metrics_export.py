"""The Prometheus exposition of a daemon, with prometheus_client: one registry per daemon
(never the library's global one) holding the daemon's collector and the process metrics
of the daemon itself, rendered in the format the scraper asks for.

Imported on the first scrape only (backendai/metrics_http.py): prometheus_client and
what it pulls in cost ~2.7 MB of RSS, which a daemon nobody scrapes does not pay.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from backendai.metric_counts import CounterVec, HistogramVec


def new_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of its own: the daemon's collectors and its process metrics
    (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open fds, ...)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def render(registry: CollectorRegistry, *, openmetrics: bool = False) -> tuple[bytes, str]:
    """The exposition and its Content-Type: OpenMetrics 1.0.0, or the classic text
    format (0.0.4). The choice is ours to make from a fixed pair: nothing the scraper
    sent is echoed into the answer's headers."""
    encode, content_type = choose_encoder(OPENMETRICS if openmetrics else "")
    return encode(registry), content_type


def counter(name: str, doc: str, counts: CounterVec) -> CounterMetricFamily:
    """A counter family from plain counts (`name` ends in `_total`)."""
    family = CounterMetricFamily(name, doc, labels=counts.labels)
    for labels, value in counts.items():
        family.add_metric(labels, value)
    return family


def counter_of(name: str, doc: str, labels: Sequence[str],
               samples: Iterable[tuple[Sequence[str], float]]) -> CounterMetricFamily:
    """A counter family from totals the daemon's state already holds (e.g. a service's
    restart count); `name` ends in `_total`."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def histogram(name: str, doc: str, hist: HistogramVec) -> HistogramMetricFamily:
    """A histogram family from plain observations (cumulative buckets, +Inf last)."""
    family = HistogramMetricFamily(name, doc, labels=hist.labels)
    bounds = [*(_bound(b) for b in hist.bounds), "+Inf"]
    for labels, data in hist.items():
        family.add_metric(list(labels), list(zip(bounds, data.cumulative(), strict=True)),
                          data.sum)
    return family


def gauge(name: str, doc: str, labels: Sequence[str],
          samples: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def one_hot(key: Sequence[str], choices: Iterable[str],
            current: str) -> Iterator[tuple[Sequence[str], float]]:
    """Samples of a one-hot gauge for one subject (`key`: its leading label values): one
    per choice, 1 for the current one, 0 otherwise (`current` is added when it is not
    among the choices)."""
    seen = False
    for choice in choices:
        hit = choice == current
        seen = seen or hit
        yield (*key, choice), 1.0 if hit else 0.0
    if not seen and current:
        yield (*key, current), 1.0


def _bound(value: float) -> str:
    return repr(float(value))


__all__ = ["Collector", "Metric", "counter", "counter_of", "gauge", "histogram",
           "new_registry", "one_hot", "render"]
