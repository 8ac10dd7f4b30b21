"""The manager's live API for browsers, over WebSocket (message shapes: docs/DASHBOARD.md).

- `WS /api/services/ws` (seed 004): a snapshot of every service, then one message per
  change, from the same per-unit feeds WatchStatus reads, and the services a config
  reload adds (their `status`) or removes (`removed`), from the supervised units' member feed.
  Each service's message is published under its name, so a slow reader gets the latest
  status of each service, never a backlog (backendai/websocket.py coalesces).
- `WS /api/services/{name}/logs/ws?tail=N`: the last N lines, then new lines, in
  batches (at most ~10 messages a second); a slow reader holds the follower back
  (the log store reads from the file when asked), so memory stays bounded.
- `WS /api/updates/{id}/ws`: every step of an update operation (replayed when it is
  over), as WatchUpdate sends them.
- `WS /api/events/ws?subject=&kind=&limit=N`: the recent events, then each new one
  (backendai/events/live_ws.py; the page shows a service's beside its details).

A caller without a valid token is closed with 1008 before any data; a read-only token
may watch (these are reads). What a request names is checked before the upgrade, for
authenticated callers only (an unknown service is a 404, a bad `tail` a 400), so a
caller without a token learns nothing about what exists. The WebSocket layer is
imported at the first WebSocket (~1.3 MB RSS with wsproto and hashlib): a manager
nobody watches does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from backendai.errors import InvalidArgument, NotFound
from backendai.events import live_ws
from backendai.http_router import Router, open_access
from backendai.http_server import JSON, Request, Upgrade
from backendai.update_terms import outcome_text
from manager.api.control import ManagerControl
from manager.supervision.states import ServiceStatus
from manager.supervision.unit import ServiceUnit

if TYPE_CHECKING:
    from backendai.websocket import Limits, WebSocket

DEFAULT_TAIL = 100
MAX_TAIL = 1000
BATCH_SECONDS = 0.1  # log lines arriving within this time go out as one message
BATCH_LINES = 1000
MAX_LINE = 4096  # characters of one log line sent (longer lines are cut, marked "…")


def status_json(st: ServiceStatus, now: float) -> JSON:
    """One service as the dashboard sees it."""
    u = st.update
    return {
        "name": st.name, "state": st.state.value, "desired": st.desired,
        "pid": st.pid or None, "restarts": st.restarts,
        "started_at": st.started_at or None,
        "uptime_seconds": round(max(0.0, now - st.started_at), 3) if st.started_at else 0.0,
        "state_since": st.state_since or None, "exit_code": st.exit_code,
        "exit_signal": st.exit_signal, "version": st.version, "package": st.package,
        "backend": st.backend, "message": st.message, "adopted": st.adopted,
        "health": st.health or None, "health_message": st.health_message,
        "health_since": st.health_since or None, "health_failures": st.health_failures,
        "instance_of": st.instance_of, "instance": st.instance, "after": list(st.after),
        "update": {
            "running_operation_id": u.running_operation_id,
            "running_version": u.running_version, "running_step": u.running_step,
            "running_origin": u.running_origin, "last_operation_id": u.last_operation_id,
            "last_outcome": u.last_outcome, "last_message": u.last_message,
            "last_version": u.last_version, "last_origin": u.last_origin},
    }


def _tail(req: Request) -> int:
    text = req.query.get("tail")
    if text is None:
        return DEFAULT_TAIL
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and int(text) <= MAX_TAIL):
        raise InvalidArgument(f"tail must be an integer between 0 and {MAX_TAIL}, "
                              f"got {text[:40]!r}")
    return int(text)


def _line(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "…"


def _accept(req: Request, app: Callable[[WebSocket], Awaitable[None]],
            limits: Limits | None) -> Upgrade:
    from backendai.websocket import Limits, websocket  # noqa: PLC0415 - see the docstring

    # Browsers send nothing on these sockets: a handful of messages is plenty.
    return websocket(req, app, limits=limits or Limits(max_message=4096, max_incoming=8,
                                                       rate=5.0, burst=20))


class LiveRoutes:
    def __init__(self, control: ManagerControl, limits: Limits | None = None) -> None:
        self.control = control
        self.limits = limits
        self.host = socket.gethostname()

    def add_to(self, router: Router) -> None:
        router.add("GET", "/api/services/ws", self._services, auth=open_access)
        router.add("GET", "/api/services/(?P<name>[^/]+)/logs/ws", self._logs,
                   query=("tail",), auth=open_access)
        router.add("GET", "/api/updates/(?P<id>[^/]+)/ws", self._update, auth=open_access)
        router.add("GET", "/api/events/ws", self._events, query=live_ws.QUERY,
                   auth=open_access)

    # ---- WS /api/services/ws -------------------------------------------------------

    async def _services(self, req: Request) -> Upgrade:
        return _accept(req, self._watch_services, self.limits)

    def hello(self, ws: WebSocket) -> JSON:
        identity = ws.identity
        return {"manager": {"version": self.control.manager_version,
                            "role": self.control.role, "host": self.host,
                            "primary": self.control.primary},
                "caller": {"name": identity.name,
                           "role": identity.role.value if identity.role else None}}

    async def _watch_services(self, ws: WebSocket) -> None:
        """The snapshot, then each service's changes; a reload that adds a service starts
        its messages (a `status` for a name not seen yet), one that removes a service
        sends `removed` (under the service's key: a later status of a re-added service
        replaces it)."""
        from backendai.websocket import ConnectionClosed  # noqa: PLC0415

        members = self.control.supervised.members.subscribe()
        forwards: dict[str, tuple[ServiceUnit, asyncio.Task[None]]] = {}
        try:
            units = dict(await anext(members))
            feeds = {name: unit.watch() for name, unit in units.items()}
            first = {name: await anext(feed) for name, feed in feeds.items()}
            now = time.time()
            await ws.send({"type": "snapshot", **self.hello(ws), "at": round(now, 3),
                           "services": [status_json(st, now) for st in first.values()]})
            try:
                async with asyncio.TaskGroup() as tg:
                    for name, feed in feeds.items():
                        forwards[name] = (units[name], tg.create_task(
                            self._forward(ws, name, feed, first[name])))
                    tg.create_task(self._drain(ws))
                    async for now_members in members:
                        self._follow_members(ws, tg, forwards, dict(now_members))
            except* ConnectionClosed:
                pass
        finally:
            for _, task in forwards.values():
                task.cancel()
            with contextlib.suppress(RuntimeError):
                await members.aclose()  # type: ignore[attr-defined]

    def _follow_members(self, ws: WebSocket, tg: asyncio.TaskGroup,
                        forwards: dict[str, tuple[ServiceUnit, asyncio.Task[None]]],
                        units: dict[str, ServiceUnit]) -> None:
        """A reload changed the set of services: stop following what went (saying so),
        follow what came (its first status goes out as a `status`)."""
        for name, (unit, task) in list(forwards.items()):
            if units.get(name) is not unit:
                task.cancel()
                del forwards[name]
                if name not in units:
                    ws.publish(name, {"type": "removed", "at": round(time.time(), 3),
                                      "service": name})
        for name, unit in units.items():
            if name not in forwards:
                forwards[name] = (unit, tg.create_task(
                    self._forward(ws, name, unit.watch(), None)))

    async def _forward(self, ws: WebSocket, name: str, feed: AsyncIterator[ServiceStatus],
                       last: ServiceStatus | None) -> None:
        try:
            async for st in feed:
                if st is last:
                    continue
                last = st
                now = time.time()
                ws.publish(name, {"type": "status", "at": round(now, 3),
                                  "service": status_json(st, now)})
        finally:
            with contextlib.suppress(RuntimeError):
                await feed.aclose()  # type: ignore[attr-defined]

    @staticmethod
    async def _drain(ws: WebSocket) -> None:
        """Take (and ignore) what the client sends: the socket's limits bound it."""
        while True:
            await ws.receive()

    # ---- WS /api/services/{name}/logs/ws ---------------------------------------------

    async def _logs(self, req: Request) -> Upgrade:
        tail, name = DEFAULT_TAIL, ""
        if req.caller.identity.authenticated:
            name = self.control.unit(req.params["name"]).name  # 404 / 400 before upgrading
            tail = _tail(req)

        async def session(ws: WebSocket) -> None:
            await self._follow(ws, name, tail)
        return _accept(req, session, self.limits)

    async def _follow(self, ws: WebSocket, name: str, tail: int) -> None:
        from backendai.websocket import ConnectionClosed  # noqa: PLC0415

        follower = self.control.follow_logs(name, tail)
        await ws.send({"type": "logs", "service": name, "tail": True, "lines": []})
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._drain(ws))
                tg.create_task(self._batches(ws, name, follower))
        except* ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                await follower.aclose()  # type: ignore[attr-defined]

    async def _batches(self, ws: WebSocket, name: str,
                       follower: AsyncIterator[list[str]]) -> None:
        """Send the follower's lines, joining what arrives within BATCH_SECONDS; waits
        while the client is behind (send() applies backpressure)."""
        loop = asyncio.get_running_loop()
        nxt: asyncio.Future[list[str]] | None = None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(anext(follower))
                try:
                    lines = [_line(x) for x in await nxt]
                except StopAsyncIteration:
                    await ws.send({"type": "end", "service": name})
                    return
                nxt = None
                deadline = loop.time() + BATCH_SECONDS
                while len(lines) < BATCH_LINES:
                    nxt = asyncio.ensure_future(anext(follower))
                    done, _ = await asyncio.wait({nxt}, timeout=deadline - loop.time())
                    if not done:
                        break
                    try:
                        lines += [_line(x) for x in nxt.result()]
                    except StopAsyncIteration:
                        break
                    nxt = None
                await ws.send({"type": "logs", "service": name, "lines": lines})
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt

    # ---- WS /api/events/ws ----------------------------------------------------------

    async def _events(self, req: Request) -> Upgrade:
        """The recent events of a subject (the page asks `subject=service/NAME`), then
        each new one, from the history's own watch (backendai/events/live_ws.py)."""
        page = live_ws.ws_request({})
        if req.caller.identity.authenticated:
            page = live_ws.ws_request(req.query)  # 400 before upgrading
            self.control.require_events()  # 501 without a history

        async def session(ws: WebSocket) -> None:
            await live_ws.serve(ws, lambda: live_ws.stream(
                ws, page, self.control.list_events,
                lambda flt, after: self.control.watch_events(flt, after_id=after)))
        return _accept(req, session, self.limits)

    # ---- WS /api/updates/{id}/ws -----------------------------------------------------

    async def _update(self, req: Request) -> Upgrade:
        op_id = ""
        if req.caller.identity.authenticated:
            op_id = req.params["id"]
            self.control.watch_update(op_id)  # checks the id and that updates exist
            op = self.control.require_updater().operation(op_id)
            if op is None:
                raise NotFound(f"no update operation {op_id}")

        async def session(ws: WebSocket) -> None:
            await self._update_events(ws, op_id)
        return _accept(req, session, self.limits)

    async def _update_events(self, ws: WebSocket, op_id: str) -> None:
        updater = self.control.require_updater()
        op = updater.operation(op_id)
        if op is not None:
            await ws.send({"type": "operation", "operation_id": op.id, "service": op.service,
                           "kind": op.kind.value, "from_version": op.from_version,
                           "to_version": op.to_version, "created": op.created})
        events = self.control.watch_update(op_id)
        try:
            async for ev in events:
                await ws.send(update_event_json(ev))
            # returning closes with 1000 after what is queued
        finally:
            with contextlib.suppress(RuntimeError):
                await events.aclose()  # type: ignore[attr-defined]


def update_event_json(ev: Any) -> JSON:
    return {"type": "step", "operation_id": ev.op_id, "seq": ev.seq, "step": ev.step.value,
            "status": ev.status.value, "message": ev.message,
            "elapsed_seconds": round(ev.elapsed, 3), "at": ev.at, "final": ev.final,
            "outcome": outcome_text(ev.outcome)}
