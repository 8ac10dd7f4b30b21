"""Events as every daemon keeps them, and the rules for asking about them.

An `Event` is one line of history: a strictly increasing id (given by the store when it
is written, never reused), a wall-clock time, a dotted kind (`service.state`,
`audit.stop`, ...), the subject it is about (`service/web`, `host/agent-3`,
`rollout/<id>`, `manager`), one human line, structured string fields, and for audit
events who asked, through which transport, from where, and what they got.

Sizes are bounded when an event is made (long text is cut, extra fields dropped), so a
hostile request name or a huge error message cannot bloat the history. Queries are
validated here once for every transport: a bad filter is an InvalidArgument naming
the parameter.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from backendai.errors import InvalidArgument

MAX_KIND = 100
MAX_SUBJECT = 256
MAX_MESSAGE = 1000
MAX_FIELDS = 32
MAX_FIELD_KEY = 64
MAX_FIELD_VALUE = 1000
MAX_AUDIT_TEXT = 300
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ID = 2**63 - 1
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z

KIND_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
# A kind filter: a kind, or a prefix that ends in "." ("audit.") or "*" ("audit*", "*").
KIND_FILTER_RE = re.compile(r"\*|[a-z][a-z0-9_.]*\*?")
GLOB_CHARS = "*?"


def cut(text: str, limit: int) -> str:
    """`text` of at most `limit` characters (an ellipsis marks a cut)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    subject: str
    message: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    at: float = 0.0
    actor: str = ""
    transport: str = ""
    peer: str = ""
    result: str = ""
    host: str = ""
    id: int = 0  # 0 until the store wrote it

    @property
    def is_audit(self) -> bool:
        return self.kind.startswith("audit.")


def make_event(kind: str, subject: str, message: str = "",
               fields: Mapping[str, object] | None = None, *, at: float,
               actor: str = "", transport: str = "", peer: str = "",
               result: str = "") -> Event:
    """An event with every part bounded: fields become strings (None values dropped),
    at most MAX_FIELDS of them, long text cut."""
    if not KIND_RE.fullmatch(kind) or len(kind) > MAX_KIND:
        raise ValueError(f"not an event kind: {kind!r}")  # a bug in the caller
    out: dict[str, str] = {}
    for key, value in (fields or {}).items():
        if value is None:
            continue
        if len(out) >= MAX_FIELDS:
            break
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out[cut(str(key), MAX_FIELD_KEY)] = cut(text, MAX_FIELD_VALUE)
    return Event(kind, cut(subject, MAX_SUBJECT), cut(message, MAX_MESSAGE), out, at,
                 cut(actor, MAX_AUDIT_TEXT), cut(transport, 20), cut(peer, MAX_AUDIT_TEXT),
                 cut(result, MAX_MESSAGE))


# ---- queries ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a query or a watch wants. kind: exact, or a prefix (`kind_prefix`);
    subject: exact, or a glob with * and ? (`subject_glob`); since/until: wall-clock
    bounds, 0 for none (until is inclusive)."""

    kind: str = ""
    kind_prefix: bool = False
    subject: str = ""
    subject_glob: bool = False
    since: float = 0.0
    until: float = 0.0

    def matches(self, ev: Event) -> bool:
        if self.kind and not (ev.kind.startswith(self.kind) if self.kind_prefix
                              else ev.kind == self.kind):
            return False
        if self.subject and not (fnmatch.fnmatchcase(ev.subject, self.subject)
                                 if self.subject_glob else ev.subject == self.subject):
            return False
        if self.since and ev.at < self.since:
            return False
        return not (self.until and ev.at > self.until)


def _text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    if len(value) > limit or not value.isprintable():
        raise InvalidArgument(f"{name} must be at most {limit} printable characters, got "
                              f"{cut(value, 40)!r}")
    return value


def _time(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise InvalidArgument(f"{name} must be a Unix time between 0 and {MAX_TIME:.0f} "
                              f"(0: no bound), got {value!r}")
    return float(value)


def check_filter(kind: object = "", subject: object = "", since: object = 0.0,
                 until: object = 0.0) -> EventFilter:
    """A filter from request values; InvalidArgument naming the parameter."""
    kind = _text(kind, "kind", MAX_KIND)
    prefix = False
    if kind:
        if not KIND_FILTER_RE.fullmatch(kind) or ".." in kind:
            raise InvalidArgument(
                f"kind must be a dotted kind like 'service.state', or a prefix ending in "
                f"'.' or '*' like 'audit.', got {cut(kind, 40)!r}")
        if kind.endswith("*"):
            kind, prefix = kind[:-1], True
        elif kind.endswith("."):
            prefix = True
        elif not KIND_RE.fullmatch(kind):
            raise InvalidArgument(f"kind {kind!r} is not a dotted kind")
    subject = _text(subject, "subject", MAX_SUBJECT)
    if "[" in subject or "]" in subject:
        raise InvalidArgument("subject: only * and ? are wildcards ('[' and ']' are not "
                              "allowed)")
    since_t, until_t = _time(since, "since"), _time(until, "until")
    if since_t and until_t and since_t > until_t:
        raise InvalidArgument(f"since ({since_t:.3f}) is after until ({until_t:.3f})")
    return EventFilter(kind, prefix, subject, any(c in subject for c in GLOB_CHARS),
                       since_t, until_t)


def _id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{name} must be an event id between 0 and {MAX_ID}")
    return value


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page of a listing: events with after_id < id < before_id (0: unbounded)
    matching `filter`, oldest first, or newest first."""

    filter: EventFilter = field(default_factory=EventFilter)
    after_id: int = 0
    before_id: int = 0
    newest_first: bool = False
    limit: int = DEFAULT_LIMIT


def check_page(flt: EventFilter, *, after_id: object = 0, before_id: object = 0,
               newest_first: object = False, limit: object = 0) -> PageRequest:
    """A page request from request values (limit 0: the default)."""
    after, before = _id(after_id, "after_id"), _id(before_id, "before_id")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgument("limit must be an integer")
    if limit == 0:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT} (0: "
                              f"{DEFAULT_LIMIT}), got {limit}")
    if after and before and after >= before - 1:
        raise InvalidArgument(f"after_id ({after}) must be below before_id ({before}) "
                              "minus one: the range holds no id")
    if not isinstance(newest_first, bool):
        raise InvalidArgument("newest_first must be true or false")
    return PageRequest(flt, after, before, newest_first, limit)


def check_known(last_id: int, *, after_id: int = 0, before_id: int = 0) -> None:
    """Ids from the future (beyond the newest written) are a mistake: another daemon's
    ids, or a history that was reset. Say so instead of waiting for them."""
    if after_id > last_id:
        raise InvalidArgument(f"after_id {after_id} is beyond the newest event id "
                              f"{last_id} (an id from another daemon, or a reset history?)")
    if before_id > last_id + 1:
        raise InvalidArgument(f"before_id {before_id} is beyond the newest event id "
                              f"{last_id} plus one")


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    next_after_id: int  # forward paging: pass as after_id for more (0: none right now)
    next_before_id: int  # backward paging: pass as before_id for older (0: none)
    last_id: int  # the newest id written
    oldest_id: int  # the oldest id still kept (0: none kept)


def page_of(req: PageRequest, found: list[Event], last_id: int, oldest_id: int) -> Page:
    """The page for what a store found (at most `req.limit` events, in request order)."""
    next_after = next_before = 0
    if found and len(found) >= req.limit:  # a full page: there may be more
        if req.newest_first:
            next_before = min(e.id for e in found)
        else:
            next_after = max(e.id for e in found)
    return Page(found, next_after, next_before, last_id, oldest_id)


# ---- plain JSON (HTTP, sinks, aictl --json) -------------------------------------------------

def to_json(ev: Event, *, source: str = "") -> dict[str, object]:
    """The JSON object every transport and sink uses (stable keys; audit fields empty
    on other events)."""
    out: dict[str, object] = {
        "id": ev.id, "at": round(ev.at, 6), "kind": ev.kind, "subject": ev.subject,
        "message": ev.message, "fields": dict(ev.fields), "actor": ev.actor,
        "transport": ev.transport, "peer": ev.peer, "result": ev.result}
    if ev.host:
        out["host"] = ev.host
    if source:
        out["source"] = source
    return out
