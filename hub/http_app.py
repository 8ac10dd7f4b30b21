"""The hub's HTTP listener (`http_listen`): the JSON API (hub/http_routes.py) on the
shared transport (backendai/http_server.py), with the hub's bearer token."""

from __future__ import annotations

from backendai.auth import Token
from backendai.http_server import HttpServer
from backendai.listen import ListenAddress
from hub.fleet import Fleet
from hub.http_routes import HubRoutes
from hub.inventory import Inventory
from hub.metrics_routes import add_metrics_routes
from hub.rollouts import Rollouts
from hub.stats import HubStats


def hub_http_server(listen: ListenAddress, *, token: Token | None, version: str,
                    inventory: Inventory, fleet: Fleet, rollouts: Rollouts,
                    stats: HubStats | None = None, metrics_open: bool = False) -> HttpServer:
    """stats: the hub's counts; with them the listener also serves GET /metrics."""
    routes = HubRoutes(version=version, inventory=inventory, fleet=fleet, rollouts=rollouts)
    if stats is not None:
        add_metrics_routes(routes.router, inventory=inventory, rollouts=rollouts,
                           stats=stats, version=version, open_=metrics_open)
    return HttpServer(listen, routes.router, token=token)
