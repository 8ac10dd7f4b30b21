"""Events on the wire: protobuf messages (ListEvents / WatchEvents on Manager and Hub)
to and from the event model, validated by model.py's rules."""

from __future__ import annotations

from backendai.errors import InvalidArgument
from backendai.events.model import Event, EventFilter, Page, PageRequest, check_filter, check_page
from backendai.v1 import events_pb2 as epb


def to_pb(ev: Event) -> epb.Event:
    return epb.Event(id=ev.id, at_unix=ev.at, kind=ev.kind, subject=ev.subject,
                     message=ev.message, fields=dict(ev.fields), actor=ev.actor,
                     transport=ev.transport, peer=ev.peer, result=ev.result, host=ev.host)


def from_pb(msg: epb.Event) -> Event:
    return Event(kind=msg.kind, subject=msg.subject, message=msg.message,
                 fields=dict(msg.fields), at=msg.at_unix, actor=msg.actor,
                 transport=msg.transport, peer=msg.peer, result=msg.result, host=msg.host,
                 id=msg.id)


def no_host(req: epb.ListEventsRequest | epb.WatchEventsRequest) -> None:
    """A manager answers for itself: `host` is for the hub's fan-out."""
    if req.host:
        raise InvalidArgument("host: only the hub fans a query out to a host; ask this "
                              "manager without host")


def page_request(req: epb.ListEventsRequest) -> PageRequest:
    flt = check_filter(req.kind, req.subject, req.since_unix, req.until_unix)
    return check_page(flt, after_id=req.after_id, before_id=req.before_id,
                      newest_first=req.newest_first, limit=req.limit)


def watch_filter(req: epb.WatchEventsRequest) -> EventFilter:
    return check_filter(req.kind, req.subject)


def page_response(page: Page, host: str = "") -> epb.ListEventsResponse:
    events = [to_pb(e) for e in page.events]
    if host:
        for e in events:
            e.host = host
    return epb.ListEventsResponse(events=events, next_after_id=page.next_after_id,
                                  last_id=page.last_id, oldest_id=page.oldest_id)
