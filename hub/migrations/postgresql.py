"""The PostgreSQL backend's schema, version by version (see hub/migrations/__init__.py).
Each migration runs in one transaction with its version row, under an advisory lock, so
hubs starting at once on an empty database apply it once."""

from __future__ import annotations

from hub.migrations import Component, Migration

LOCK_KEY = 0x6875625F6D6967  # pg_advisory_xact_lock key of the migrations ("hub_mig")

META = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component text PRIMARY KEY, version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
"""

HUB = Component("hub", (
    Migration(1, "rollouts, events, registered hosts, leader lease", """
CREATE TABLE rollouts (
    id text PRIMARY KEY, created double precision NOT NULL, seq bigserial NOT NULL,
    state text NOT NULL, active boolean NOT NULL, core text NOT NULL,
    epoch bigint NOT NULL);
CREATE INDEX rollouts_recent ON rollouts (created DESC, seq DESC);
CREATE INDEX rollouts_active ON rollouts (active) WHERE active;
CREATE TABLE rollout_hosts (
    rollout_id text NOT NULL, name text NOT NULL, seq bigserial NOT NULL, row text NOT NULL,
    PRIMARY KEY (rollout_id, name));
CREATE INDEX rollout_hosts_order ON rollout_hosts (rollout_id, seq);
CREATE TABLE rollout_events (
    rollout_id text NOT NULL, idx bigint NOT NULL, event text NOT NULL, epoch bigint NOT NULL,
    PRIMARY KEY (rollout_id, idx));
CREATE SEQUENCE registered_hosts_seq;
CREATE TABLE registered_hosts (
    name text PRIMARY KEY, entry text NOT NULL, registered double precision NOT NULL,
    seq bigint NOT NULL);
CREATE INDEX registered_hosts_by_seq ON registered_hosts (seq);
CREATE TABLE hub_lease (
    id integer PRIMARY KEY CHECK (id = 1), holder text NOT NULL, address text NOT NULL,
    epoch bigint NOT NULL, expires_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL);
"""),
))

# The event history (backendai/events). Ids come from the one row of event_seq, taken
# with its lock in the writing transaction: writers (of any hub) queue on it, so ids
# become visible in order and a reader that saw id N never later finds a smaller one.
EVENTS = Component("events", (
    Migration(1, "event history and sink cursors", """
CREATE TABLE event_seq (id integer PRIMARY KEY CHECK (id = 1), last bigint NOT NULL);
INSERT INTO event_seq (id, last) VALUES (1, 0);
CREATE TABLE events (
    id bigint PRIMARY KEY, at double precision NOT NULL, kind text NOT NULL,
    subject text NOT NULL, message text NOT NULL DEFAULT '',
    fields text NOT NULL DEFAULT '{}', actor text NOT NULL DEFAULT '',
    transport text NOT NULL DEFAULT '', peer text NOT NULL DEFAULT '',
    result text NOT NULL DEFAULT '', host text NOT NULL DEFAULT '');
CREATE INDEX events_subject ON events (subject, id);
CREATE INDEX events_kind ON events (kind, id);
CREATE TABLE event_cursors (
    sink text PRIMARY KEY, last_id bigint NOT NULL, updated double precision NOT NULL);
"""),
))
