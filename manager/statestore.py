"""The manager's state on disk: one SQLite file (WAL) under state_dir.

What must survive a crash is written here before it is acted on: a service's desired
state and spawn id are recorded before the spawn, its pid right after.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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
-- The updater's journal (manager/update_journal.py): each step is recorded before it acts.
CREATE TABLE IF NOT EXISTS update_ops (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,             -- 'update' | 'rollback'
    from_version TEXT NOT NULL,
    to_version TEXT NOT NULL,
    state TEXT NOT NULL,            -- 'running' | 'done'
    outcome TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    finished REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS update_events (
    op_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    elapsed REAL NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (op_id, seq)
);
CREATE TABLE IF NOT EXISTS releases (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    installed REAL NOT NULL,
    PRIMARY KEY (service, version)
);
CREATE TABLE IF NOT EXISTS release_pointers (
    service TEXT PRIMARY KEY,
    previous TEXT NOT NULL DEFAULT ''
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
        self.db.executescript(SCHEMA)

    def load_service(self, name: str) -> ServiceRecord | None:
        row = self.db.execute(
            "SELECT name, desired, spawn_id, pid, create_time, restarts FROM services "
            "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return ServiceRecord(*row)

    def save_service(self, rec: ServiceRecord) -> None:
        self.db.execute(
            "INSERT INTO services (name, desired, spawn_id, pid, create_time, restarts, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " desired=excluded.desired, spawn_id=excluded.spawn_id, pid=excluded.pid,"
            " create_time=excluded.create_time, restarts=excluded.restarts,"
            " updated=excluded.updated",
            (rec.name, rec.desired, rec.spawn_id, rec.pid, rec.create_time, rec.restarts,
             time.time()))

    def close(self) -> None:
        self.db.close()
