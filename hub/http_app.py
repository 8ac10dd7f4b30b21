"""The hub's HTTP listener (`http_listen`): the JSON API (hub/http_routes.py), the fleet
and log WebSockets (hub/fleet_ws.py) and the dashboard's pages, on the shared transport
(backendai/http_server.py) with the hub's tokens (a read-only token may look, not act).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backendai.auth import Tokens
from backendai.events.log import EventLog
from backendai.http_router import open_access
from backendai.http_server import HttpServer
from backendai.listen import ListenAddress
from hub.events_http import add_event_routes
from hub.events_ws import EventSockets
from hub.fleet import Fleet
from hub.fleet_feed import FleetFeed
from hub.fleet_ws import FleetSockets
from hub.http_routes import HubRoutes
from hub.inventory import Inventory
from hub.metrics_routes import add_metrics_routes
from hub.rollouts import Rollouts
from hub.stats import HubStats
from hub.ui_routes import add_ui_routes

if TYPE_CHECKING:
    import ssl


class HubHttp:
    """The server and the feed its dashboards watch (run `feed.run()` beside it)."""

    def __init__(self, listen: ListenAddress, *, tokens: Tokens | None, version: str,
                 inventory: Inventory, fleet: Fleet, rollouts: Rollouts,
                 stats: HubStats | None = None, metrics_open: bool = False,
                 events: EventLog | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """stats: the hub's counts; with them the listener also serves GET /metrics;
        events: the hub's history, served at GET /api/events; ssl_context: serve HTTPS
        (`http_tls`; the context follows SIGHUP's certificate, backendai/tls.py)."""
        self.feed = FleetFeed(inventory, rollouts)
        routes = HubRoutes(version=version, inventory=inventory, fleet=fleet,
                           rollouts=rollouts)
        sockets = FleetSockets(self.feed, fleet)
        r = routes.router
        # The sockets check the token themselves: a refused caller gets the handshake and
        # then a 1008 close, which a browser can tell from a network error.
        r.add("GET", "/api/fleet/ws", sockets.fleet_socket, query=("rollout",),
              auth=open_access)
        r.add("GET", "/api/hosts/(?P<name>[^/]+)/logs/ws", sockets.log_socket,
              query=("service", "tail"), auth=open_access)
        add_ui_routes(r)
        if events is not None:
            add_event_routes(r, events, inventory, fleet.links)
            EventSockets(events, inventory, fleet.links).add_to(r)  # WS /api/events/ws
        if stats is not None:
            add_metrics_routes(r, inventory=inventory, rollouts=rollouts, stats=stats,
                               version=version, open_=metrics_open)
        self.server = HttpServer(listen, r, token=tokens, ssl_context=ssl_context)
