"""`WS /api/events/ws`: the recent events of a subject, then each new one as it is
committed — what the dashboards show beside a service, a host or a rollout (message
shapes: docs/DASHBOARD.md). Shared by the manager and the hub; each passes where its
events come from.

Query: `subject` and `kind` (the filters of `GET /api/events`), `limit` (how many recent
events come first, 1-200, default 20). The first message holds the newest `limit`
matching events and the id they reach (`last_id`); the watch then starts after that id,
so nothing committed in between is missed or sent twice. New events go out in batches
(what arrives within 0.1 s, at most 100 a message). A slow reader holds the watch back:
the events wait in the database, not in the daemon's memory (`send` applies
backpressure; the watch reads pages from the store as the reader takes them).

A page that reconnects gets the recent events again (its list is replaced), so a
reconnect never leaves a gap in what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from backendai.errors import BackendAIError, InvalidArgument
from backendai.events import http_query
from backendai.events.model import Event, EventFilter, Page, PageRequest, to_json

if TYPE_CHECKING:
    from backendai.websocket import WebSocket

QUERY = ("subject", "kind", "limit")
DEFAULT_RECENT = 20
MAX_RECENT = 200
BATCH_SECONDS = 0.1
BATCH_EVENTS = 100

Recent = Callable[[PageRequest], Awaitable[Page]]
Follow = Callable[[EventFilter, int], AsyncIterator[Event]]


def ws_request(query: Mapping[str, str]) -> PageRequest:
    """The recent page a socket's query asks for: newest first, `limit` of them
    (InvalidArgument naming the parameter, as `GET /api/events`)."""
    text = query.get("limit")
    if text is not None and not (text.isascii() and text.isdigit() and len(text) <= 4
                                 and 1 <= int(text) <= MAX_RECENT):
        raise InvalidArgument(f"limit must be an integer between 1 and {MAX_RECENT}, "
                              f"got {text[:40]!r}")
    asked = {k: v for k, v in query.items() if k in ("subject", "kind")}
    asked["limit"] = text or str(DEFAULT_RECENT)
    return http_query.page_request(asked)


async def stream(ws: WebSocket, req: PageRequest, recent: Recent, follow: Follow) -> None:
    """The recent events, then every new one until `follow` ends (the daemon stops, or
    the manager a hub relays went away: its error propagates)."""
    page = await recent(req)
    await ws.send({"type": "events", "recent": True, "last_id": page.last_id,
                   "events": [to_json(e) for e in sorted(page.events, key=_id)]})
    watch = follow(req.filter, page.last_id)
    try:
        async for batch in _batches(watch):
            await ws.send({"type": "events", "events": [to_json(e) for e in batch]})
    finally:
        with contextlib.suppress(RuntimeError):
            await watch.aclose()  # type: ignore[attr-defined]


async def serve(ws: WebSocket, run: Callable[[], Awaitable[None]]) -> None:
    """A socket's session: `run()` beside a reader that takes (and ignores) what the
    client sends, within the socket's limits; `end` once `run` returns, `error` (and a
    normal close) when it fails with one of ours (a listing that scans too long, a
    daemon without a history)."""
    from backendai.websocket import ConnectionClosed  # noqa: PLC0415 - see ws_routes.py

    async def drain() -> None:
        while True:
            await ws.receive()

    async def main() -> None:
        try:
            await run()
        except BackendAIError as exc:
            await ws.send({"type": "error", "error": str(exc)})
        else:
            await ws.send({"type": "end"})
        reader.cancel()

    try:
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(drain())
            tg.create_task(main())
    except* ConnectionClosed:
        pass


def _id(ev: Event) -> int:
    return ev.id


async def _batches(source: AsyncIterator[Event]) -> AsyncIterator[list[Event]]:
    """Events as they come, joined when they arrive within BATCH_SECONDS of the first."""
    loop = asyncio.get_running_loop()
    it = aiter(source)
    nxt: asyncio.Future[Event] | None = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(anext(it))
            try:
                batch = [await nxt]
            except StopAsyncIteration:
                return
            nxt = None
            deadline = loop.time() + BATCH_SECONDS
            while len(batch) < BATCH_EVENTS:
                nxt = asyncio.ensure_future(anext(it))
                done, _ = await asyncio.wait({nxt}, timeout=deadline - loop.time())
                if not done:
                    break
                try:
                    batch.append(nxt.result())
                except StopAsyncIteration:
                    yield batch
                    return
                nxt = None
            yield batch
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt
