"""The hub's WebSockets (docs/DASHBOARD.md), on backendai/websocket.py:

    GET /api/fleet/ws[?rollout=ID]                     the fleet, then its changes
    GET /api/hosts/{name}/logs/ws[?service=&tail=N]    a host's service log, live

Both need a token like the rest of the API (header, or `?token=` from a browser); a
caller without one gets the handshake and then a 1008 close before any data. The
fleet socket sends a snapshot, then at most one `changes` message per feed interval
(hub/fleet_feed.py), never more than one queued: a dashboard that reads slowly gets
fewer, merged messages. The log socket relays the manager's StreamLogs batches in
order, with backpressure down to the manager's stream. Messages from the client are
read and ignored (the socket's limits close a flood).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import grpc

from backendai.errors import InvalidArgument, NotFound, StoreUnavailable
from backendai.http_query import query_int, query_text
from backendai.http_server import Request, Upgrade
from backendai.v1 import hub_pb2 as pb
from backendai.validate import check_host_name, check_service_name
from backendai.websocket import Limits, WebSocket, websocket
from hub.fleet import Fleet
from hub.fleet_feed import FleetFeed
from hub.manager_links import describe

# One queued message at most: while the dashboard has not taken it, the feed merges
# newer changes into the next one instead of queueing more.
FLEET_LIMITS = Limits(max_message=4096, max_pending=1)
LOG_LIMITS = Limits(max_message=4096, max_pending=16)
MAX_TAIL = 10_000
DEFAULT_TAIL = 200


async def _drain(ws: WebSocket) -> None:
    """Take (and ignore) what the client sends, so its messages never pile up."""
    while True:
        await ws.receive()


async def _with_drain(ws: WebSocket, work: asyncio.Task[None]) -> None:
    reader = asyncio.create_task(_drain(ws), name="ws-drain")
    try:
        await asyncio.wait({reader, work}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, work):
            task.cancel()
        for task in (reader, work):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        failed = work.exception() if work.done() and not work.cancelled() else None
        if failed is not None:
            raise failed


class FleetSockets:
    def __init__(self, feed: FleetFeed, fleet: Fleet) -> None:
        self.feed = feed
        self.fleet = fleet

    # ---------------------------------------------------------------- the fleet

    async def fleet_socket(self, req: Request) -> Upgrade:
        if not req.caller.identity.authenticated:
            return websocket(req, _nothing)  # refused with 1008 before any data
        rollout_id = query_text(req, "rollout", 100)
        return websocket(req, functools.partial(self._fleet, rollout_id),
                         limits=FLEET_LIMITS)

    async def _fleet(self, rollout_id: str, ws: WebSocket) -> None:
        try:
            watch, snapshot = await self.feed.watch(rollout_id)
        except (NotFound, StoreUnavailable) as exc:
            await ws.send({"type": "error", "error": str(exc)})
            return  # closed with 1000 once the error is sent
        ident = ws.identity
        snapshot["caller"] = {"name": ident.name,
                              "role": ident.role.value if ident.role else None}
        try:
            await ws.send(snapshot)

            async def relay() -> None:
                async for message in watch.changes():
                    await ws.send(message)

            await _with_drain(ws, asyncio.create_task(relay(), name="fleet-relay"))
        finally:
            watch.close()

    # ---------------------------------------------------------------- a host's log

    async def log_socket(self, req: Request) -> Upgrade:
        if not req.caller.identity.authenticated:
            return websocket(req, _nothing)
        host = check_host_name(req.params["name"], "host")
        service = query_text(req, "service", 200)
        if service:
            check_service_name(service, "service")
        tail = query_int(req, "tail", DEFAULT_TAIL, 0, MAX_TAIL)
        self.fleet.inventory.get(host)  # 404 for an unknown host, before the upgrade
        request = pb.StreamHostLogsRequest(host=host, service=service, tail_lines=tail)
        return websocket(req, functools.partial(self._logs, request), limits=LOG_LIMITS)

    async def _logs(self, request: pb.StreamHostLogsRequest, ws: WebSocket) -> None:
        async def relay() -> None:
            try:
                async for batch in self.fleet.logs(request):
                    await ws.send({"type": "lines", "lines": list(batch.lines)})
            except grpc.aio.AioRpcError as exc:
                await ws.send({"type": "error",
                               "error": f"host {request.host}: {describe(exc)}"})
                return
            except (NotFound, InvalidArgument) as exc:
                await ws.send({"type": "error", "error": str(exc)})
                return
            await ws.send({"type": "end"})

        await _with_drain(ws, asyncio.create_task(relay(), name="log-relay"))


async def _nothing(ws: WebSocket) -> None:
    """Never runs: websocket() refuses an unauthenticated caller before the app."""
