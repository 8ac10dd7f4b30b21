"""`GET /api/events` on the hub's HTTP listener: the hub's own history, or with
`?host=NAME` that host's, asked of its manager (as Hub.ListEvents with `host`). The
query rules are backendai/events/http_query.py's; `host` is the one addition."""

from __future__ import annotations

import grpc

from backendai.events import http_query, wire
from backendai.events.log import EventLog
from backendai.events.model import Page, PageRequest, to_json
from backendai.http_router import Router
from backendai.http_server import JSON, HttpError, Request
from backendai.v1 import events_pb2 as epb
from hub.events_fanout import list_host_events
from hub.http_routes import MANAGER_STATUS
from hub.inventory import Inventory
from hub.manager_links import ManagerLinks, describe


def as_request(req: PageRequest, host: str) -> epb.ListEventsRequest:
    flt = req.filter
    kind = flt.kind + ("*" if flt.kind_prefix and not flt.kind.endswith(".") else "")
    return epb.ListEventsRequest(
        kind=kind or ("*" if flt.kind_prefix else ""), subject=flt.subject,
        since_unix=flt.since, until_unix=flt.until, after_id=req.after_id,
        before_id=req.before_id, limit=req.limit, newest_first=req.newest_first, host=host)


def add_event_routes(router: Router, events: EventLog, inventory: Inventory,
                     links: ManagerLinks) -> None:
    async def handler(request: Request) -> JSON:
        query = dict(request.query)
        host = query.pop("host", "")
        req = http_query.page_request(query)
        if not host:
            return http_query.page_json(await events.page(req), source=events.source)
        try:
            resp = await list_host_events(inventory, links, as_request(req, host))
        except grpc.aio.AioRpcError as exc:  # the manager's refusal, in its words
            raise HttpError(MANAGER_STATUS.get(exc.code(), 502),
                            f"host {host}: {describe(exc)}") from None
        found = [wire.from_pb(e) for e in resp.events]
        page = Page(found, resp.next_after_id,
                    min(e.id for e in found) if req.newest_first and len(found) >= req.limit
                    else 0, resp.last_id, resp.oldest_id)
        out = http_query.page_json(page)
        out["events"] = [to_json(e) for e in found]
        out["host"] = host
        return out

    router.add("GET", "/api/events", handler, query=(*http_query.QUERY, "host"))
