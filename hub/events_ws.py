"""`WS /api/events/ws` on the hub's HTTP listener: the recent events, then each new one
(backendai/events/live_ws.py) — the hub's own history (a rollout's page asks
`subject=rollout/ID`), or with `host=NAME` that host's, relayed from its manager
(ListEvents for the recent ones, then WatchEvents after the id they reach; the host
page's events).

A host's manager may be down or go away: the socket stays open, says so (`error`, in
the manager's words), and asks again with backoff (1 s doubling to 30 s); once the
manager answers, the recent events come again and the page replaces its list, so it
never shows a gap. What a request names is checked before the upgrade, for callers with
a valid token: a bad filter or host name is a 400, an unknown host a 404.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import grpc

from backendai.events import live_ws, wire
from backendai.events.log import EventLog
from backendai.events.model import Event, EventFilter, Page, PageRequest
from backendai.http_router import Router, open_access
from backendai.http_server import Request, Upgrade
from backendai.v1 import events_pb2 as epb
from backendai.validate import check_host_name
from backendai.websocket import Limits, WebSocket, websocket
from hub.events_fanout import list_host_events, watch_host_events
from hub.events_http import as_request
from hub.inventory import Inventory
from hub.manager_links import ManagerLinks, describe

LIMITS = Limits(max_message=4096, max_incoming=8, rate=5.0, burst=20, max_pending=16)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0


class EventSockets:
    def __init__(self, events: EventLog, inventory: Inventory, links: ManagerLinks) -> None:
        self.events = events
        self.inventory = inventory
        self.links = links

    def add_to(self, router: Router) -> None:
        # The socket checks the token itself (1008 before any data), as the fleet's.
        router.add("GET", "/api/events/ws", self.socket, query=(*live_ws.QUERY, "host"),
                   auth=open_access)

    async def socket(self, req: Request) -> Upgrade:
        if not req.caller.identity.authenticated:
            return websocket(req, _nothing)
        query = dict(req.query)
        host = query.pop("host", "")
        page = live_ws.ws_request(query)
        if host:
            self.inventory.get(check_host_name(host, "host"))  # 400 / 404 before the upgrade
            return websocket(req, functools.partial(self._host, host, page), limits=LIMITS)
        return websocket(req, functools.partial(self._own, page), limits=LIMITS)

    async def _own(self, page: PageRequest, ws: WebSocket) -> None:
        await live_ws.serve(ws, lambda: live_ws.stream(
            ws, page, self.events.page,
            lambda flt, after: self.events.watch(flt, after_id=after)))

    async def _host(self, host: str, page: PageRequest, ws: WebSocket) -> None:
        delay = RETRY_FIRST

        async def recent(req: PageRequest) -> Page:
            nonlocal delay
            resp = await list_host_events(self.inventory, self.links, as_request(req, host))
            delay = RETRY_FIRST  # its manager answers: a later loss starts over
            found = [wire.from_pb(e) for e in resp.events]
            return Page(found, 0, 0, resp.last_id, resp.oldest_id)

        async def follow(flt: EventFilter, after: int) -> AsyncIterator[Event]:
            request = epb.WatchEventsRequest(after_id=after, host=host,
                                             kind=as_request(page, host).kind,
                                             subject=flt.subject)
            async for ev in watch_host_events(self.inventory, self.links, request):
                yield wire.from_pb(ev)

        async def relay() -> None:
            nonlocal delay
            while True:
                try:
                    await live_ws.stream(ws, page, recent, follow)
                except grpc.aio.AioRpcError as exc:
                    await ws.send({"type": "error", "error": f"host {host}: {describe(exc)}"})
                # the manager went away or ended the watch (it stopped): ask again after
                # a while (the page keeps its list meanwhile)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

        await live_ws.serve(ws, relay)


async def _nothing(ws: WebSocket) -> None:
    """Never runs: websocket() refuses an unauthenticated caller before the app."""
