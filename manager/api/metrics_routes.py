"""GET /metrics on the manager's HTTP port (docs/METRICS.md): the shared endpoint
(backendai/metrics_http.py) over the manager's collector, which is imported, with
prometheus_client, on the first scrape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from backendai.http_router import Router
from backendai.metrics_http import MetricsEndpoint, add_metrics_route
from manager.api.control import ManagerControl

if TYPE_CHECKING:
    from prometheus_client.registry import Collector


def add_metrics_routes(router: Router, control: ManagerControl) -> MetricsEndpoint:
    def collectors() -> Iterable[Collector]:
        from manager.api.metrics import ManagerCollector  # noqa: PLC0415 - first scrape

        return [ManagerCollector(control)]

    return add_metrics_route(router, collectors, open_=control.config.metrics_open)
