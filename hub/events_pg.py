"""The event history on the hub's PostgreSQL store (the EventStore of
backendai/events/store.py; tables in hub/migrations/postgresql.py, component "events").

Ids come from event_seq's one row, locked by the writing transaction, so ids become
visible in order even with several hubs writing; each write NOTIFYs `events`, which
wakes the other hubs' watchers and sinks. Listings run with a statement timeout of
QUERY_BUDGET seconds (a scan that runs longer is stopped with a clear error); subject
globs become LIKE patterns (only * and ? are wildcards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from backendai.errors import DeadlineExceeded
from backendai.events.model import Event, PageRequest
from backendai.events.page_query import COLUMNS, POSTGRESQL
from backendai.events.page_query import page_query as build_page_query
from backendai.events.sqlite_store import PRUNE_CHUNK, QUERY_BUDGET, event_row, row_event
from backendai.events.store import Bounds

if TYPE_CHECKING:
    from hub.store_postgres import PostgresStore

_INSERT = (f"INSERT INTO events ({COLUMNS}) "  # noqa: S608 - fixed columns
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


# the ids first..last of event_seq's row taken in the same statement, then the rows
_INSERT_ROWS = (
    "WITH seq AS ("  # noqa: S608 - fixed columns
    "UPDATE event_seq SET last = last + %s WHERE id = 1 RETURNING last), "
    "ins AS ("
    f"INSERT INTO events ({COLUMNS}) "
    "SELECT (SELECT last FROM seq) - %s + n, at, kind, subject, message, fields, actor, "
    "transport, peer, result, host FROM unnest(%b::float8[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "WITH ORDINALITY AS t(at, kind, subject, message, fields, actor, transport, peer, "
    "result, host, n)) "
    "SELECT last FROM seq")


def page_query(req: PageRequest, last_id: int) -> tuple[str, list[Any]]:
    return build_page_query(req, last_id, POSTGRESQL)


async def insert_events(conn: psycopg.AsyncConnection[Any], events: Sequence[Event],
                        channel: str) -> int:
    """Insert inside the caller's open transaction (taking event_seq's lock until it
    ends); the newest id written."""
    cur = await conn.execute("UPDATE event_seq SET last = last + %s WHERE id = 1 "
                             "RETURNING last", (len(events),))
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - the migration inserts the row
    last = int(row[0])
    first = last - len(events) + 1
    async with conn.cursor() as c:
        await c.executemany(_INSERT, [(first + i, *event_row(ev))
                                      for i, ev in enumerate(events)])
    await conn.execute("SELECT pg_notify(%s, 'events')", (channel,))
    return last


async def insert_rows(conn: psycopg.AsyncConnection[Any], rows: Sequence[tuple[Any, ...]],
                      channel: str) -> int:
    """`insert_events` of rows made already (`event_row`'s form, as a rollout's notes
    become: hub/rollout_history.py note_rows), many at once: one statement over one
    array per column (unnest), not a statement per row. Pipelined with the caller's
    other statements: the ids follow event_seq's row, taken by the UPDATE in the same
    statement, so nothing is read back before the transaction's other writes go out."""
    if not rows:
        return 0
    columns = [list(column) for column in zip(*rows, strict=True)]
    cur = await conn.execute(_INSERT_ROWS, (len(rows), len(rows), *columns))
    await conn.execute("SELECT pg_notify(%s, 'events')", (channel,))
    return await _last(cur)


async def _last(cur: psycopg.AsyncCursor[Any]) -> int:
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - the migration inserts the row
    return int(row[0])


class PgEventStore:
    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel

    async def append(self, events: Sequence[Event]) -> int:
        async with self.store.connection("writing events") as conn, conn.transaction():
            return await insert_events(conn, events, self.channel)

    async def page(self, req: PageRequest, last_id: int) -> list[Event]:
        sql, params = page_query(req, last_id)
        budget = max(1, int(QUERY_BUDGET * 1000))
        async with self.store.connection("reading events") as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {budget}")
            try:
                cur = await conn.execute(sql, params)
                rows = await cur.fetchall()
            except psycopg.errors.QueryCanceled:  # (the transaction is rolled back)
                raise DeadlineExceeded(
                    f"the event query scanned for more than {QUERY_BUDGET:g}s; narrow it "
                    "(kind, subject, time range)") from None
        return [row_event(r) for r in rows]

    async def bounds(self) -> Bounds:
        async with self.store.connection("reading events") as conn:
            cur = await conn.execute("SELECT (SELECT last FROM event_seq WHERE id = 1), "
                                     "(SELECT min(id) FROM events)")
            row = await cur.fetchone()
        assert row is not None  # noqa: S101 - a SELECT of two scalars
        return Bounds(int(row[1] or 0), int(row[0] or 0))

    async def prune(self, *, keep: int, before_time: float) -> int:
        removed = 0
        bounds = await self.bounds()
        threshold = bounds.last_id - keep
        oldest = bounds.oldest_id
        while oldest and oldest <= threshold:
            upto = min(threshold, oldest + PRUNE_CHUNK - 1)
            removed += await self._delete("DELETE FROM events WHERE id <= %s", (upto,))
            oldest = upto + 1
        while before_time > 0:
            n = await self._delete("DELETE FROM events WHERE id IN (SELECT id FROM events "
                                   "ORDER BY id LIMIT %s) AND at < %s",
                                   (PRUNE_CHUNK, before_time))
            removed += n
            if n < PRUNE_CHUNK:
                break
        return removed

    async def _delete(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self.store.connection("pruning events") as conn:
            cur = await conn.execute(sql, params)
            return int(cur.rowcount)

    async def cursor(self, sink: str) -> int | None:
        async with self.store.connection("reading a sink cursor") as conn:
            cur = await conn.execute("SELECT last_id FROM event_cursors WHERE sink = %s",
                                     (sink,))
            row = await cur.fetchone()
        return int(row[0]) if row else None

    async def save_cursor(self, sink: str, last_id: int) -> None:
        async with self.store.connection("saving a sink cursor") as conn:
            await conn.execute(
                "INSERT INTO event_cursors (sink, last_id, updated) VALUES "
                "(%s, %s, extract(epoch FROM now())) ON CONFLICT (sink) DO UPDATE SET "
                "last_id = excluded.last_id, updated = excluded.updated", (sink, last_id))

    async def close(self) -> None:
        return None  # the store owns the pool
