"""Hub.ListEvents / WatchEvents with `host` set: the question goes to that host's manager
and its answer comes back with `host` on every event (`aictl events --host agent-3`).

The request is validated here first (a bad filter never reaches a manager); the
manager judges its ids (an id from the future is its error, passed on as it said it).
A watch is relayed as it streams; when the manager goes away the stream ends with
UNAVAILABLE and the client resumes after the last id it got.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from backendai.deadlines import step_deadline
from backendai.events import wire
from backendai.v1 import events_pb2 as epb
from backendai.validate import check_host_name
from hub.inventory import HostView, Inventory
from hub.manager_links import ManagerLinks


def _view(inventory: Inventory, host: str) -> HostView:
    return inventory.get(check_host_name(host, "host"))


async def list_host_events(inventory: Inventory, links: ManagerLinks,
                           request: epb.ListEventsRequest) -> epb.ListEventsResponse:
    wire.page_request(request)  # the same rules the manager applies
    view = _view(inventory, request.host)
    asked = epb.ListEventsRequest()
    asked.CopyFrom(request)
    asked.host = ""
    async with step_deadline(f"events of host {view.name}", links.call_timeout):
        resp: epb.ListEventsResponse = await links.stub(
            view.entry.manager_address).ListEvents(asked)
    for ev in resp.events:
        ev.host = view.name
    return resp


async def watch_host_events(inventory: Inventory, links: ManagerLinks,
                            request: epb.WatchEventsRequest) -> AsyncIterator[epb.Event]:
    wire.watch_filter(request)
    view = _view(inventory, request.host)
    asked = epb.WatchEventsRequest()
    asked.CopyFrom(request)
    asked.host = ""
    call = links.stub(view.entry.manager_address).WatchEvents(asked)
    try:
        async for ev in call:
            ev.host = view.name
            yield ev
    finally:
        call.cancel()
