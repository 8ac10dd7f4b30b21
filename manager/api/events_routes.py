"""`GET /api/events` on the manager's HTTP port: the event history, filtered and paged
(the query rules are backendai/events/http_query.py's, shared with the hub). The
dashboards show a service's recent events with `?subject=service/NAME&limit=20`."""

from __future__ import annotations

from backendai.events import http_query
from backendai.http_router import Router
from manager.api.control import ManagerControl


def add_event_routes(router: Router, control: ManagerControl) -> None:
    http_query.add_event_routes(router, control.list_events,
                                lambda: control.require_events().source)
