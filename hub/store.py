"""The hub's SQLite state (WAL): rollouts, their per-host rows and event log, and the
hosts that registered. A rollout's new state and its events are written in one
transaction before the actions they lead to are carried out."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hub.config import HostEntry
from hub.rollout_model import (
    Counts,
    HostRun,
    HostState,
    Note,
    Rollout,
    RolloutState,
    as_dict,
    as_dict_fields,
    host_row,
    note_row,
)
from hub.rollout_plan import Strategy

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, created REAL NOT NULL, state TEXT NOT NULL, active INTEGER NOT NULL,
    core TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_hosts (
    rollout_id TEXT NOT NULL, name TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (rollout_id, name));
CREATE TABLE IF NOT EXISTS rollout_events (
    rollout_id TEXT NOT NULL, idx INTEGER NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (rollout_id, idx));
CREATE TABLE IF NOT EXISTS registered_hosts (
    name TEXT PRIMARY KEY, entry TEXT NOT NULL, registered REAL NOT NULL);
"""


def _host_from(d: dict[str, Any]) -> HostRun:
    return HostRun(**{**d, "state": HostState(d["state"])})


def _rollout_from(core: dict[str, Any], hosts: dict[str, HostRun]) -> Rollout:
    core = dict(core)
    core["strategy"] = Strategy(**{**core["strategy"], "waves": tuple(core["strategy"]["waves"])})
    core["state"] = RolloutState(core["state"])
    core["paused_from"] = RolloutState(core["paused_from"]) if core["paused_from"] else None
    core["specs"] = tuple(core["specs"])
    core["target_hosts"] = tuple(core["target_hosts"])
    return Rollout(**core, hosts=hosts)


def note_from(d: dict[str, Any]) -> Note:
    return Note(**{**d, "state": RolloutState(d["state"]),
                   "host_state": HostState(d["host_state"]) if d["host_state"] else None,
                   "counts": Counts(**d["counts"])})


class HubStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- rollouts

    def save(self, r: Rollout, hosts: Iterable[HostRun], notes: Iterable[Note]) -> None:
        """One transaction: the rollout core, the changed host rows, the new events."""
        core = as_dict_fields(r, skip=frozenset({"hosts"}))
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO rollouts (id, created, state, active, core) VALUES (?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, active=excluded.active, "
                "core=excluded.core",
                (r.id, r.created_at, r.state.value, int(r.active), json.dumps(core)))
            self.db.executemany(
                "INSERT INTO rollout_hosts (rollout_id, name, row) VALUES (?,?,?) "
                "ON CONFLICT(rollout_id, name) DO UPDATE SET row=excluded.row",  # keeps rowid
                [(r.id, h.name, json.dumps(host_row(h))) for h in hosts])
            self.db.executemany(
                "INSERT INTO rollout_events (rollout_id, idx, event) VALUES (?,?,?)",
                [(r.id, n.index, json.dumps(note_row(n))) for n in notes])

    def load(self, rollout_id: str) -> Rollout | None:
        row = self.db.execute("SELECT core FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
        if row is None:
            return None
        hosts = [_host_from(json.loads(h)) for (h,) in self.db.execute(
            "SELECT row FROM rollout_hosts WHERE rollout_id=? ORDER BY rowid", (rollout_id,))]
        hosts.sort(key=lambda h: h.wave)  # plan order: by wave, then insertion
        return _rollout_from(json.loads(row[0]), {h.name: h for h in hosts})

    def ids(self, *, limit: int, active_only: bool = False) -> list[str]:
        sql = "SELECT id FROM rollouts"
        if active_only:
            sql += " WHERE active=1"
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        return [i for (i,) in self.db.execute(sql, (limit,))]

    def events(self, rollout_id: str, from_index: int, limit: int = 1000) -> list[Note]:
        return [note_from(json.loads(e)) for (e,) in self.db.execute(
            "SELECT event FROM rollout_events WHERE rollout_id=? AND idx>=? ORDER BY idx "
            "LIMIT ?", (rollout_id, from_index, limit))]

    def prune(self, keep: int) -> int:
        """Forget finished rollouts beyond the newest `keep` (their rows and events)."""
        old = [i for (i,) in self.db.execute(
            "SELECT id FROM rollouts WHERE active=0 ORDER BY created DESC, rowid DESC "
            "LIMIT -1 OFFSET ?", (keep,))]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for rid in old:
                for table in ("rollout_events", "rollout_hosts"):
                    self.db.execute(f"DELETE FROM {table} WHERE rollout_id=?",  # noqa: S608 - fixed table names
                                    (rid,))
                self.db.execute("DELETE FROM rollouts WHERE id=?", (rid,))
        return len(old)

    # ---------------------------------------------------------------- registered hosts

    def save_host(self, entry: HostEntry, at: float) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO registered_hosts VALUES (?,?,?)",
                            (entry.name, json.dumps(as_dict(entry)), at))

    def registered_hosts(self) -> list[HostEntry]:
        out = []
        for (e,) in self.db.execute("SELECT entry FROM registered_hosts ORDER BY name"):
            d: Mapping[str, Any] = json.loads(e)
            out.append(HostEntry(**d))
        return out
