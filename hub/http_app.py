"""The hub's HTTP listener (`http_listen`): the JSON API (hub/http_routes.py) on the
shared transport (backendai/http_server.py), with the hub's bearer token."""

from __future__ import annotations

from backendai.auth import Token
from backendai.http_server import HttpServer
from backendai.listen import ListenAddress
from hub.fleet import Fleet
from hub.http_routes import HubRoutes
from hub.inventory import Inventory
from hub.rollouts import Rollouts


def hub_http_server(listen: ListenAddress, *, token: Token | None, version: str,
                    inventory: Inventory, fleet: Fleet, rollouts: Rollouts) -> HttpServer:
    routes = HubRoutes(version=version, inventory=inventory, fleet=fleet, rollouts=rollouts)
    return HttpServer(listen, routes.router, token=token)
