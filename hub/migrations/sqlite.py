"""The SQLite backend's schema, version by version (see hub/migrations/__init__.py).
Version 1 is the schema hubs wrote before schemas were versioned (CREATE ... IF NOT
EXISTS, so such a file adopts it as it is); version 2 adds the lease and the epochs."""

from __future__ import annotations

from backendai.events.sqlite_store import SCHEMA as EVENTS_SCHEMA
from hub.migrations import Component, Migration

META = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""

HUB = Component("hub", (
    Migration(1, "rollouts, events, registered hosts", """
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
"""),
    Migration(2, "leader lease and write epochs", """
CREATE TABLE hub_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, address TEXT NOT NULL,
    epoch INTEGER NOT NULL, expires_at REAL NOT NULL, renewed_at REAL NOT NULL);
ALTER TABLE rollouts ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registered_hosts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX registered_hosts_seq ON registered_hosts (seq);
"""),
))

# The event history (backendai/events): the same tables as the manager's state file.
EVENTS = Component("events", (
    Migration(1, "event history and sink cursors", EVENTS_SCHEMA),
))
