"""The SQLite backend of the hub's store (hub/store.py): one file in state_dir, WAL, one
hub (state_dir's lock file guarantees it). Its calls are synchronous underneath: a
batch's write is ~2 ms on a 500-host rollout, cheaper on the event loop than a thread
hop (docs/BENCHMARKS.md, "Hub scale").

The lease lives here too, so a single hub runs the same leadership code as a fleet of
hubs on PostgreSQL; its clock is the hub's own (one machine), and taking the lease
always succeeds (no other hub can open this file while the lock is held).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backendai.errors import LeaseLost
from backendai.events.model import Event
from backendai.events.sqlite_store import SqliteEventStore, insert_events, insert_rows
from hub.config import HostEntry
from hub.migrations import pending
from hub.migrations.sqlite import EVENTS, HUB, META
from hub.rollout_history import note_rows
from hub.rollout_model import HostRun, Note, Rollout
from hub.store import (
    EVENT_PAGE,
    ChangeFeed,
    Fence,
    Lease,
    decode_entry,
    decode_note,
    decode_rollout,
    encode_core,
    encode_entry,
    encode_host,
    encode_note,
)

if TYPE_CHECKING:
    from backendai.events.log import EventLog


WAL_CHECKPOINT_PAGES = 8000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes


class SqliteStore:
    backend = "sqlite"

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.where = str(path)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # A rollout rewrites the same pages (its host rows, the history's indexes) in
        # many small commits: checkpointing the WAL every 8,000 pages instead of 1,000
        # copies each page to the database file fewer times (~0.5 s of the hub's CPU per
        # 10,000-host rollout); the WAL file is cut back to 64 MB after a checkpoint.
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.rollout_changes = ChangeFeed()
        self.lease_changes = ChangeFeed()
        self.host_changes = ChangeFeed()
        self.event_changes = ChangeFeed()  # never poked: this hub is the only writer
        self._events: EventLog | None = None
        try:
            self._migrate(migrate)
        except BaseException:
            self.db.close()
            raise
        self.history = SqliteEventStore(self.db, path, ensure_schema=None)

    def _migrate(self, allow: bool) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(META.strip().rstrip(";"))
            for component in (HUB, EVENTS):
                row = self.db.execute("SELECT version FROM schema_versions WHERE component=?",
                                      (component.name,)).fetchone()
                for m in pending(component, row[0] if row else 0, migrate=allow,
                                 where=self.where):
                    for statement in _statements(m.sql):
                        self.db.execute(statement)
                    self.db.execute(
                        "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                        "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                        (component.name, m.version))

    def attach_events(self, events: EventLog) -> None:
        """The event log told of the history this store writes with its own writes."""
        self._events = events

    def _committed(self, last: int, count: int) -> None:
        if self._events is not None and count:
            self._events.committed(last, count)

    async def run(self) -> None:
        """Nothing to listen to: this hub is the only writer."""

    async def close(self) -> None:
        await self.history.close()
        self.db.close()

    # ---------------------------------------------------------------- rollouts

    def _fence(self, fence: Fence) -> None:
        row = self.db.execute("SELECT holder, epoch FROM hub_lease WHERE id=1").fetchone()
        if row is None or tuple(row) != (fence.holder, fence.epoch):
            raise LeaseLost(f"lease epoch {fence.epoch} of {fence.holder} is no longer "
                            f"current (now {row[1] if row else 'none'})")

    async def save(self, r: Rollout, hosts: Iterable[HostRun], notes: Iterable[Note], *,
                   fence: Fence) -> None:
        """One transaction: the lease check, the rollout core, the changed host rows,
        the new events (and their lines in the event history)."""
        epoch = fence.epoch
        notes = list(notes)
        history = note_rows(r, notes)
        last = 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._fence(fence)
            self.db.execute(
                "INSERT INTO rollouts (id, created, state, active, core, epoch) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
                "active=excluded.active, core=excluded.core, epoch=excluded.epoch",
                (r.id, r.created_at, r.state.value, int(r.active), encode_core(r), epoch))
            self.db.executemany(
                "INSERT INTO rollout_hosts (rollout_id, name, row) VALUES (?,?,?) "
                "ON CONFLICT(rollout_id, name) DO UPDATE SET row=excluded.row",  # keeps rowid
                [(r.id, h.name, encode_host(h)) for h in hosts])
            self.db.executemany(
                "INSERT INTO rollout_events (rollout_id, idx, event, epoch) VALUES (?,?,?,?)",
                [(r.id, n.index, encode_note(n), epoch) for n in notes])
            if history:
                last = insert_rows(self.db, history)
        self.rollout_changes.poke()
        self._committed(last, len(history))

    async def prune(self, keep: int, *, fence: Fence) -> int:
        """Forget finished rollouts beyond the newest `keep` (their rows and events)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._fence(fence)
            old = [i for (i,) in self.db.execute(
                "SELECT id FROM rollouts WHERE active=0 ORDER BY created DESC, rowid DESC "
                "LIMIT -1 OFFSET ?", (keep,))]
            for rid in old:
                for table in ("rollout_events", "rollout_hosts"):
                    self.db.execute(f"DELETE FROM {table} WHERE rollout_id=?",  # noqa: S608 - fixed table names
                                    (rid,))
                self.db.execute("DELETE FROM rollouts WHERE id=?", (rid,))
        return len(old)

    async def load(self, rollout_id: str) -> Rollout | None:
        row = self.db.execute("SELECT core FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
        if row is None:
            return None
        return decode_rollout(row[0], (h for (h,) in self.db.execute(
            "SELECT row FROM rollout_hosts WHERE rollout_id=? ORDER BY rowid", (rollout_id,))))

    async def ids(self, *, limit: int, active_only: bool = False) -> list[str]:
        sql = "SELECT id FROM rollouts"
        if active_only:
            sql += " WHERE active=1"
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        return [i for (i,) in self.db.execute(sql, (limit,))]

    async def is_active(self, rollout_id: str) -> bool:
        row = self.db.execute("SELECT active FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
        return bool(row and row[0])

    async def events(self, rollout_id: str, from_index: int,
                     limit: int = EVENT_PAGE) -> list[Note]:
        return [decode_note(e) for (e,) in self.db.execute(
            "SELECT event FROM rollout_events WHERE rollout_id=? AND idx>=? ORDER BY idx "
            "LIMIT ?", (rollout_id, from_index, limit))]

    # ---------------------------------------------------------------- registered hosts

    async def save_host(self, entry: HostEntry, at: float,
                        history: Sequence[Event] = ()) -> None:
        last = 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO registered_hosts (name, entry, registered, seq) VALUES "
                "(?,?,?,(SELECT COALESCE(MAX(seq), 0) + 1 FROM registered_hosts)) "
                "ON CONFLICT(name) DO UPDATE SET entry=excluded.entry, "
                "registered=excluded.registered, seq=excluded.seq",
                (entry.name, encode_entry(entry), at))
            if history:
                last = insert_events(self.db, history)
        self.host_changes.poke()
        self._committed(last, len(history))

    async def registered_hosts(self) -> list[HostEntry]:
        return [decode_entry(e) for (e,) in self.db.execute(
            "SELECT entry FROM registered_hosts ORDER BY name")]

    async def hosts_since(self, seq: int) -> tuple[list[HostEntry], int]:
        rows = self.db.execute("SELECT entry, seq FROM registered_hosts WHERE seq > ? "
                               "ORDER BY seq", (seq,)).fetchall()
        return [decode_entry(e) for e, _ in rows], max((s for _, s in rows), default=seq)

    # ---------------------------------------------------------------- the lease

    def _lease(self, now: float) -> Lease | None:
        row = self.db.execute("SELECT holder, address, epoch, expires_at FROM hub_lease "
                              "WHERE id=1").fetchone()
        return Lease(row[0], row[1], row[2], row[3], now) if row else None

    async def acquire_lease(self, hub_id: str, address: str, ttl: float, *,
                            only_if_expired: bool = False) -> tuple[Lease, bool]:
        """Always ours: state_dir's lock keeps every other hub off this file (so no
        other process can hold it under this hub's id either)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            old = self._lease(now)
            epoch = old.epoch + 1 if old else 1
            self.db.execute(
                "INSERT INTO hub_lease (id, holder, address, epoch, expires_at, renewed_at) "
                "VALUES (1,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET holder=excluded.holder, "
                "address=excluded.address, epoch=excluded.epoch, "
                "expires_at=excluded.expires_at, renewed_at=excluded.renewed_at",
                (hub_id, address, epoch, now + ttl, now))
        return Lease(hub_id, address, epoch, now + ttl, now), True

    async def renew_lease(self, hub_id: str, epoch: int, ttl: float) -> Lease | None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "UPDATE hub_lease SET expires_at=?, renewed_at=? WHERE id=1 AND holder=? "
                "AND epoch=? AND expires_at > ?", (now + ttl, now, hub_id, epoch, now))
            if cur.rowcount != 1:
                return None
        return self._lease(now)

    async def release_lease(self, hub_id: str, epoch: int) -> None:
        now = time.time()
        with self.db:
            self.db.execute("UPDATE hub_lease SET expires_at=? WHERE id=1 AND holder=? "
                            "AND epoch=?", (now, hub_id, epoch))
        self.lease_changes.poke()

    async def read_lease(self) -> Lease | None:
        return self._lease(time.time())


def _statements(script: str) -> list[str]:
    """A migration script's statements (they hold no ';' inside)."""
    return [s.strip() for s in script.split(";") if s.strip()]
