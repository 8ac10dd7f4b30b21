"""GET /metrics on the hub's HTTP listener (docs/METRICS.md): the shared endpoint
(backendai/metrics_http.py) over the hub's collector, which is imported, with
prometheus_client, on the first scrape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from backendai.http_router import Router
from backendai.metrics_http import MetricsEndpoint, add_metrics_route
from hub.inventory import Inventory
from hub.rollouts import Rollouts
from hub.stats import HubStats

if TYPE_CHECKING:
    from prometheus_client.registry import Collector


def add_metrics_routes(router: Router, *, inventory: Inventory, rollouts: Rollouts,
                       stats: HubStats, version: str, open_: bool) -> MetricsEndpoint:
    def collectors() -> Iterable[Collector]:
        from hub.metrics import HubCollector  # noqa: PLC0415 - first scrape

        return [HubCollector(inventory=inventory, rollouts=rollouts, stats=stats,
                             version=version)]

    return add_metrics_route(router, collectors, open_=open_)
