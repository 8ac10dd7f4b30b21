"""The manager's state on disk: one SQLite file (WAL) under state_dir.

What must survive a crash is written here before it is acted on: a service's desired
state and spawn id are recorded before the spawn, its pid right after.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from backendai.errors import ConfigError

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

    def ensure_schema(self, component: str, version: int, ddl: str) -> None:
        """Create or check one component's tables. Each component (the services, the
        update journal, the event history) owns its tables and their version; a database
        written by a newer manager (a higher version) is refused with a clear error
        rather than misread."""
        row = self.db.execute("SELECT version FROM schema_versions WHERE component = ?",
                              (component,)).fetchone()
        if row is not None and row[0] > version:
            raise ConfigError(
                f"state_dir: {self.path} holds {component!r} tables of schema version "
                f"{row[0]}, newer than this manager's {version}; run the newer manager or "
                "move the state aside")
        if row is not None and row[0] == version:
            return  # nothing to write (each write here is an fsync before ready)
        if not component.isidentifier():
            raise ValueError(f"bad component name {component!r}")
        # One transaction: the tables and their version land together, with one fsync.
        self.db.executescript(
            f"BEGIN IMMEDIATE;\n{ddl}\n"
            "INSERT INTO schema_versions (component, version) VALUES "
            f"('{component}', {int(version)}) "
            "ON CONFLICT(component) DO UPDATE SET version = excluded.version;\nCOMMIT;")

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

    def services(self) -> list[ServiceRecord]:
        """Every service recorded, by name."""
        rows = self.db.execute("SELECT name, desired, spawn_id, pid, create_time, restarts "
                               "FROM services ORDER BY name").fetchall()
        return [ServiceRecord(*row) for row in rows]

    def forget_service(self, name: str) -> None:
        """A service a config reload removed: its record goes (a service added later
        under the same name starts afresh)."""
        self.db.execute("DELETE FROM services WHERE name = ?", (name,))

    def close(self) -> None:
        self.db.close()
