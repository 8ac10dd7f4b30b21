"""The manager's state on disk: one SQLite file (WAL) under state_dir.

What must survive a crash is written here before it is acted on: a service's desired
state and spawn id are recorded before the spawn, its pid right after.

With an event log attached (`attach_events`), a change of a service's desired state
writes its `service.desired` event (naming who asked) in the same transaction, with the
events queued before it; `transaction()` gives other state writes (the update journal)
the same. A write that changes no desired state (a pid after a spawn: the crash-repair
path) stays one plain statement, as without events; the events queued meanwhile are
committed at the end of the loop turn.

Durability: a desired state is committed with synchronous=FULL (an operator's stop
survives a power loss). A record that only says which process runs the service (its
spawn id, pid, start time, restart count) is committed with synchronous=NORMAL: durable
across a kill -9 of the manager (the WAL is in the OS's hands), which is what adoption
needs; a power loss takes the processes with it, so there is nothing to adopt and a
lost record only means the service is started again, as it would be anyway. That keeps
fsyncs off the restart path (two per restart were 5 ms of a stalled event loop and
capped a crash loop near 100 restarts a second on a virtual disk).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backendai.errors import ConfigError
from backendai.events.audit import acting
from backendai.events.model import Event, make_event
from backendai.events.sqlite_store import SqliteEventStore, insert_events
from backendai.preflight import stored_schema_versions

if TYPE_CHECKING:
    from backendai.events.log import EventLog

SCHEMA_VERSION = 1  # of the tables below (the `services` component)
SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    desired TEXT NOT NULL,          -- 'running' | 'stopped'
    spawn_id TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    create_time REAL NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
"""


SCHEMA_META = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    name: str
    desired: str = "stopped"
    spawn_id: str = ""
    pid: int = 0
    create_time: float = 0.0
    restarts: int = 0


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.path = path
        # isolation_level=None: autocommit; each statement is its own durable transaction.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA_META)
        self.ensure_schema("services", SCHEMA_VERSION, SCHEMA)
        self.events: EventLog | None = None
        self._desired: dict[str, str] = {}  # what is stored, once read or written

    def event_store(self) -> SqliteEventStore:
        """The event history's store in this file (its tables created or checked)."""
        return SqliteEventStore(self.db, self.path, ensure_schema=self.ensure_schema)

    def attach_events(self, events: EventLog) -> None:
        self.events = events

    @contextlib.contextmanager
    def transaction(self, *events: Event) -> Iterator[list[Event]]:
        """One IMMEDIATE transaction around the block that also commits the events
        queued so far, then `events` and what the block adds to the list it is given (so
        ids follow what happened); without an event log attached, only the block."""
        log = self.events
        pending = log.take_pending() if log is not None else []
        extra = list(events)
        self.db.execute("BEGIN IMMEDIATE")
        last = 0
        try:
            yield extra
            if log is not None and (pending or extra):
                last = insert_events(self.db, [*pending, *extra])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            if log is not None:
                log.put_back(pending)
            raise
        if log is not None and last:
            log.committed(last, len(pending) + len(extra))

    def ensure_schema(self, component: str, version: int, ddl: str,
                      migrate: Callable[[sqlite3.Connection, int], None] | None = None,
                      ) -> None:
        """Create or check one component's tables. Each component (the services, the
        update journal, the event history) owns its tables and their version; a database
        written by a newer manager (a higher version) is refused with a clear error
        rather than misread. An older one is brought up to date by `migrate(db, found)`
        (`found`: the version on disk, 0 when none is recorded), run in one transaction
        with the new version number: a crash leaves the old tables or the new ones."""
        row = self.db.execute("SELECT version FROM schema_versions WHERE component = ?",
                              (component,)).fetchone()
        if row is not None and row[0] > version:
            raise newer_schema(self.path, component, row[0], version)
        if row is not None and row[0] == version:
            return  # current: nothing to write (each write here is an fsync before ready)
        # One transaction: the tables, a migration and the version land together, with
        # one fsync (executescript would commit an open transaction, so it begins it).
        try:
            self.db.executescript(f"BEGIN IMMEDIATE;\n{ddl}")
            found = int(row[0]) if row is not None else 0
            if migrate is not None and found < version:
                migrate(self.db, found)
            self.db.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version))
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def load_service(self, name: str) -> ServiceRecord | None:
        row = self.db.execute(
            "SELECT name, desired, spawn_id, pid, create_time, restarts FROM services "
            "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        rec = ServiceRecord(*row)
        self._desired[name] = rec.desired
        return rec

    def save_service(self, rec: ServiceRecord) -> None:
        before = self._desired.get(rec.name)
        if before is None and self.events is not None:
            row = self.db.execute("SELECT desired FROM services WHERE name = ?",
                                  (rec.name,)).fetchone()
            before = row[0] if row else ""
        if before == rec.desired:
            with self._relaxed():  # which process runs it, not what is wanted: see above
                self._upsert(rec)
        elif self.events is None:
            self._upsert(rec)
        else:
            with self.transaction(self._desired_event(rec, before or "")):
                self._upsert(rec)
        self._desired[rec.name] = rec.desired

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """synchronous=NORMAL for the block, then FULL again."""
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def _upsert(self, rec: ServiceRecord) -> None:
        self.db.execute(
            "INSERT INTO services (name, desired, spawn_id, pid, create_time, restarts, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " desired=excluded.desired, spawn_id=excluded.spawn_id, pid=excluded.pid,"
            " create_time=excluded.create_time, restarts=excluded.restarts,"
            " updated=excluded.updated",
            (rec.name, rec.desired, rec.spawn_id, rec.pid, rec.create_time, rec.restarts,
             time.time()))

    @staticmethod
    def _desired_event(rec: ServiceRecord, before: str) -> Event:
        who = acting()
        by = f" (asked by {who.actor} over {who.transport})" if who else ""
        return make_event("service.desired", f"service/{rec.name}",
                          f"desired state {before or '(none)'} -> {rec.desired}{by}",
                          {"desired": rec.desired, "previous": before or None}, at=time.time(),
                          actor=who.actor if who else "",
                          transport=who.transport if who else "",
                          peer=who.peer if who else "")

    def services(self) -> list[ServiceRecord]:
        """Every service recorded, by name."""
        rows = self.db.execute("SELECT name, desired, spawn_id, pid, create_time, restarts "
                               "FROM services ORDER BY name").fetchall()
        return [ServiceRecord(*row) for row in rows]

    def forget_service(self, name: str) -> None:
        """A service a config reload removed: its record goes (a service added later
        under the same name starts afresh)."""
        self.db.execute("DELETE FROM services WHERE name = ?", (name,))
        self._desired.pop(name, None)

    def close(self) -> None:
        self.db.close()


def newer_schema(path: Path, component: str, found: int, version: int) -> ConfigError:
    return ConfigError(
        f"state_dir: {path} holds {component!r} tables of schema version {found}, newer "
        f"than this manager's {version}; run the newer manager or move the state aside")


def check_database(path: Path, known: Mapping[str, int]) -> None:
    """What opening the state database at start would refuse, checked without changing
    it (--check-config): it is readable and writable, and none of the `known`
    components (name -> this build's schema version) was written by a newer manager."""
    stored = stored_schema_versions(path)
    if stored is None:
        return  # no database, or one from before versions were recorded: the start migrates
    for component, version in known.items():  # in the order the start opens them
        found = stored.get(component, 0)
        if found > version:
            raise newer_schema(path, component, found, version)


def add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """ALTER TABLE ADD COLUMN for each of `columns` (name -> declaration) the table lacks:
    the usual migration, safe to run on tables that already have some of them."""
    have = {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()}
    for name, decl in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
