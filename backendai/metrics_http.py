"""`GET /metrics` (and HEAD) on a daemon's HTTP server, for Prometheus.

Who may scrape: without a token from this host (a local Prometheus or node agent), with
the daemon's bearer token from elsewhere; with `metrics_open = true` in the daemon's
config, anyone who can reach the port (scrapers on a trusted network that hold no
token). The endpoint takes no query parameters (the router answers 400 for any).

The registry is built on the first scrape: that is when prometheus_client is imported
(backendai/metrics_export.py) and the daemon's collectors are made, so a daemon nobody
scrapes does not load it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from backendai.http_router import AuthPolicy, Router, loopback_or_token, open_access
from backendai.http_server import Request, Response

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector



def metrics_auth(open_: bool) -> AuthPolicy:
    """The policy for /metrics: open with `metrics_open`, else loopback or the token."""
    return open_access if open_ else loopback_or_token


class MetricsEndpoint:
    def __init__(self, collectors: Callable[[], Iterable[Collector]]) -> None:
        """collectors: makes the daemon's collectors (called once, at the first scrape;
        it may import the modules that need prometheus_client)."""
        self._collectors = collectors
        self._registry: CollectorRegistry | None = None

    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            from backendai import metrics_export  # noqa: PLC0415 - loaded on first scrape

            self._registry = metrics_export.new_registry(self._collectors())
        return self._registry

    def scrape(self, *, openmetrics: bool = False) -> tuple[bytes, str]:
        """The exposition now and its Content-Type."""
        from backendai import metrics_export  # noqa: PLC0415 - loaded on first scrape

        return metrics_export.render(self.registry(), openmetrics=openmetrics)

    async def handle(self, request: Request) -> Response:
        # OpenMetrics when the scraper lists it (Prometheus does), else the classic text.
        accept = request.headers.get(b"accept", b"").lower()
        body, content_type = self.scrape(openmetrics=b"application/openmetrics-text" in accept)
        return Response(200, body, content_type, [("Cache-Control", "no-store")])


def add_metrics_route(router: Router, collectors: Callable[[], Iterable[Collector]], *,
                      open_: bool = False) -> MetricsEndpoint:
    """Serve GET and HEAD /metrics on `router`; returns the endpoint (tests, benchmarks)."""
    endpoint = MetricsEndpoint(collectors)
    auth = metrics_auth(open_)
    router.add("GET", "/metrics", endpoint.handle, auth=auth)
    router.add("HEAD", "/metrics", endpoint.handle, auth=auth)
    return endpoint
