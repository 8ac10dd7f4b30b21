"""The event history in a daemon's SQLite file (WAL): the `events` table with its own
schema version, sink cursors, and `SqliteEventStore`, the EventStore on it.

Writes go through the daemon's own connection, on its event loop, in the daemon's
transactions where an event belongs with a state write (`insert_events`), else in a
batch of their own committed with synchronous=NORMAL (durable across a kill -9 of the
daemon: the WAL is in the OS's hands; only a power loss can take the newest batch).
Reads use a second, read-only connection in a worker thread, so a long listing never
stalls supervision; a query that scans for longer than QUERY_BUDGET seconds is stopped
and answered with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from backendai.errors import DeadlineExceeded
from backendai.events.model import Event, PageRequest
from backendai.events.page_query import SQLITE, page_query
from backendai.events.store import Bounds

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, even after pruning
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    fields TEXT NOT NULL DEFAULT '{}',      -- JSON object of strings
    actor TEXT NOT NULL DEFAULT '',
    transport TEXT NOT NULL DEFAULT '',
    peer TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, id);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS event_cursors (
    sink TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""

QUERY_BUDGET = 2.0  # seconds a listing may scan before it is stopped
PRUNE_CHUNK = 500  # rows deleted per transaction (each a short stall of the loop)
NORMAL = 1  # PRAGMA synchronous
_INSERT = ("INSERT INTO events (at, kind, subject, message, fields, actor, transport, peer, "
           "result, host) VALUES (?,?,?,?,?,?,?,?,?,?)")


def event_row(ev: Event) -> tuple[Any, ...]:
    return (ev.at, ev.kind, ev.subject, ev.message,
            json.dumps(dict(ev.fields), separators=(",", ":"), ensure_ascii=False),
            ev.actor, ev.transport, ev.peer, ev.result, ev.host)


def row_event(r: Sequence[Any]) -> Event:
    try:
        fields = json.loads(r[5])
    except ValueError:
        fields = {}
    return Event(kind=r[2], subject=r[3], message=r[4], fields=fields, at=r[1], actor=r[6],
                 transport=r[7], peer=r[8], result=r[9], host=r[10], id=r[0])


def insert_events(db: sqlite3.Connection, events: Sequence[Event]) -> int:
    """Insert inside the caller's open transaction; the newest id written."""
    return insert_rows(db, [event_row(ev) for ev in events])


def insert_rows(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """`insert_events` of rows made already (`event_row`'s form)."""
    db.executemany(_INSERT, rows)
    return int(db.execute("SELECT last_insert_rowid()").fetchone()[0])


def read_bounds(db: sqlite3.Connection) -> Bounds:
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    oldest = db.execute("SELECT MIN(id) FROM events").fetchone()[0]
    return Bounds(int(oldest or 0), int(seq[0]) if seq else 0)


class SqliteEventStore:
    """EventStore on a daemon's SQLite file. `db` is the daemon's own connection
    (autocommit mode, used on the event loop only); `path` the file, opened again
    read-only for listings in a worker thread. `ensure_schema(component, version, ddl)`
    creates or checks the tables (None: the daemon's migrations already did)."""

    def __init__(self, db: sqlite3.Connection, path: Path, *,
                 ensure_schema: Callable[[str, int, str], None] | None) -> None:
        if ensure_schema is not None:
            ensure_schema("events", SCHEMA_VERSION, SCHEMA)
        self.db = db
        self.path = path
        self._sync = int(db.execute("PRAGMA synchronous").fetchone()[0])  # to restore
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    # ---- writes (on the loop, on the daemon's connection) ---------------------------

    async def append(self, events: Sequence[Event]) -> int:
        return self.append_now(events)

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """synchronous=NORMAL for the block, then the connection's own setting again."""
        if self._sync <= NORMAL:
            yield
            return
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.db.execute(f"PRAGMA synchronous={self._sync}")

    def append_now(self, events: Sequence[Event]) -> int:
        """One transaction of events alone, with synchronous=NORMAL (see the module doc)."""
        db = self.db
        with self._relaxed():
            db.execute("BEGIN IMMEDIATE")
            try:
                last = insert_events(db, events)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return last

    async def bounds(self) -> Bounds:
        return read_bounds(self.db)

    async def prune(self, *, keep: int, before_time: float) -> int:
        removed = 0
        bounds = read_bounds(self.db)
        threshold = bounds.last_id - keep  # ids <= threshold are beyond the newest `keep`
        oldest = bounds.oldest_id
        while oldest and oldest <= threshold:
            upto = min(threshold, oldest + PRUNE_CHUNK - 1)
            removed += self._delete("DELETE FROM events WHERE id <= ?", (upto,))
            oldest = upto + 1
            await asyncio.sleep(0)  # let supervision run between chunks
        while before_time > 0:
            # Ids follow time: the old rows are among the oldest ids. Stop at the first
            # chunk that is not entirely old.
            n = self._delete("DELETE FROM events WHERE id IN (SELECT id FROM events "
                             "ORDER BY id LIMIT ?) AND at < ?", (PRUNE_CHUNK, before_time))
            removed += n
            if n < PRUNE_CHUNK:
                break
            await asyncio.sleep(0)
        return removed

    def _delete(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._relaxed():
            return int(self.db.execute(sql, params).rowcount)

    async def cursor(self, sink: str) -> int | None:
        row = self.db.execute("SELECT last_id FROM event_cursors WHERE sink = ?",
                              (sink,)).fetchone()
        return int(row[0]) if row else None

    async def save_cursor(self, sink: str, last_id: int) -> None:
        self.db.execute("INSERT INTO event_cursors (sink, last_id, updated) VALUES (?,?,?) "
                        "ON CONFLICT(sink) DO UPDATE SET last_id = excluded.last_id, "
                        "updated = excluded.updated", (sink, last_id, time.time()))

    # ---- reads (a worker thread, a read-only connection) ------------------------------

    async def page(self, req: PageRequest, last_id: int) -> list[Event]:
        sql, params = page_query(req, last_id, SQLITE)
        return await asyncio.to_thread(self._read, sql, params)

    def _read(self, sql: str, params: list[Any]) -> list[Event]:
        with self._reader_lock:
            db = self._reader
            if db is None:
                db = self._reader = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                db.execute("PRAGMA query_only=1")
            deadline = time.monotonic() + QUERY_BUDGET
            db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                rows = db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise DeadlineExceeded(
                        f"the event query scanned for more than {QUERY_BUDGET:g}s; narrow "
                        "it (kind, subject, time range)") from None
                raise
            finally:
                db.set_progress_handler(None, 0)
        return [row_event(r) for r in rows]

    async def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
