"""The SELECT of one page of events, for both engines a history lives in (pure): SQLite
(a daemon's own file, backendai/events/sqlite_store.py) and PostgreSQL (the hubs' shared
store, hub/events_pg.py). One set of rules; what differs is the dialect: the parameter
mark, how a kind prefix is matched (an index range on SQLite; LIKE on PostgreSQL, whose
collation does not order like bytes) and how a subject glob is (GLOB; LIKE with its own
wildcards escaped). Our globs know only `*` and `?`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backendai.events.model import PageRequest

COLUMNS = "id, at, kind, subject, message, fields, actor, transport, peer, result, host"

Clause = tuple[str, list[Any]]


@dataclass(frozen=True, slots=True)
class Dialect:
    mark: str  # the parameter placeholder
    kind_prefix: Callable[[str], Clause]
    subject_glob: Callable[[str], Clause]


def _upper(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def like_pattern(glob: str) -> str:
    """A glob with * and ? as a LIKE pattern (backslash escapes LIKE's own wildcards)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


SQLITE = Dialect(
    mark="?",
    kind_prefix=lambda kind: ("kind >= ? AND kind < ?", [kind, _upper(kind)]),
    subject_glob=lambda subject: ("subject GLOB ?", [subject]))

POSTGRESQL = Dialect(
    mark="%s",
    kind_prefix=lambda kind: ("kind LIKE %s", [like_pattern(kind) + "%"]),
    subject_glob=lambda subject: ("subject LIKE %s", [like_pattern(subject)]))


def page_query(req: PageRequest, last_id: int, d: Dialect) -> Clause:
    """The SELECT of the page `req` asks for among the events up to `last_id`."""
    m = d.mark
    where: list[str] = [f"id <= {m}"]
    params: list[Any] = [last_id]

    def add(clause: str, *values: Any) -> None:
        where.append(clause)
        params.extend(values)

    if req.after_id:
        add(f"id > {m}", req.after_id)
    if req.before_id:
        add(f"id < {m}", req.before_id)
    flt = req.filter
    if flt.kind and flt.kind_prefix:
        add(*_flat(d.kind_prefix(flt.kind)))
    elif flt.kind:
        add(f"kind = {m}", flt.kind)
    if flt.subject and flt.subject_glob:
        add(*_flat(d.subject_glob(flt.subject)))
    elif flt.subject:
        add(f"subject = {m}", flt.subject)
    if flt.since:
        add(f"at >= {m}", flt.since)
    if flt.until:
        add(f"at <= {m}", flt.until)
    order = "DESC" if req.newest_first else "ASC"
    sql = (f"SELECT {COLUMNS} FROM events WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments
           f"ORDER BY id {order} LIMIT {m}")
    return sql, [*params, req.limit]


def _flat(clause: Clause) -> tuple[Any, ...]:
    return (clause[0], *clause[1])
