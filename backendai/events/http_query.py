"""`GET /api/events` on any daemon: the query string to a page request, a page to JSON.

Parameters (each optional, each at most once): kind (a kind, or a prefix ending in "."
or "*"), subject (exact, or a glob with * and ?), since / until (Unix seconds, or ISO
8601 such as 2024-05-01T03:12:00Z; without a zone: UTC), after_id, before_id, limit
(1-1000, default 100), order ("newest" or "oldest"). Without after_id the newest events
come first (`?subject=service/web&limit=20` is the last 20 of that service); with
after_id the page runs forward from it, oldest first (follow `next_after_id`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Awaitable, Callable

from backendai.errors import InvalidArgument
from backendai.events.model import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    PageRequest,
    check_filter,
    check_page,
    cut,
    to_json,
)
from backendai.http_router import Router
from backendai.http_server import JSON, Request

QUERY = ("kind", "subject", "since", "until", "after_id", "before_id", "limit", "order")
NUMBER_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


def parse_time(text: str, key: str) -> float:
    """Unix seconds, or an ISO 8601 date/time (UTC when it names no zone)."""
    if NUMBER_RE.fullmatch(text):
        return float(text)
    if len(text) > 40:
        raise InvalidArgument(f"{key} must be Unix seconds or an ISO 8601 time, got "
                              f"{cut(text, 40)!r}")
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{key} must be Unix seconds or an ISO 8601 time such as "
                              f"2024-05-01T03:12:00Z, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _int(query: dict[str, str], key: str, high: int) -> int:
    text = query.get(key)
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= high):
        raise InvalidArgument(f"{key} must be an integer between 0 and {high}, got "
                              f"{cut(text, 40)!r}")
    return int(text)


def page_request(query: dict[str, str]) -> PageRequest:
    """The page a query string asks for; InvalidArgument naming the parameter."""
    since = parse_time(query["since"], "since") if "since" in query else 0.0
    until = parse_time(query["until"], "until") if "until" in query else 0.0
    flt = check_filter(query.get("kind", ""), query.get("subject", ""), since, until)
    after = _int(query, "after_id", 2**63 - 1)
    order = query.get("order", "oldest" if after else "newest")
    if order not in ("newest", "oldest"):
        raise InvalidArgument(f"order must be newest or oldest, got {cut(order, 40)!r}")
    limit_text = query.get("limit")
    if limit_text is not None and limit_text in ("0", ""):
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}")
    limit = _int(query, "limit", 10**18) or DEFAULT_LIMIT
    return check_page(flt, after_id=after, before_id=_int(query, "before_id", 2**63 - 1),
                      newest_first=order == "newest", limit=limit)


def page_json(page: Page, *, source: str = "") -> dict[str, object]:
    return {"success": True, "events": [to_json(e) for e in page.events],
            "count": len(page.events), "last_id": page.last_id, "oldest_id": page.oldest_id,
            "next_after_id": page.next_after_id, "next_before_id": page.next_before_id,
            **({"source": source} if source else {})}


def add_event_routes(router: Router, page: Callable[[PageRequest], Awaitable[Page]],
                     source: Callable[[], str]) -> None:
    """`GET /api/events` on a daemon's router: `page` answers a validated request (the
    manager's service layer, the hub's event log), `source` names the daemon."""
    async def events(req: Request) -> JSON:
        return page_json(await page(page_request(req.query)), source=source())

    router.add("GET", "/api/events", events, query=QUERY)
