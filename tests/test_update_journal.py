"""The update journal keeps the text it always stored: rows written as older managers
wrote them (in the tables as they laid them out) load as the enums, and what this build
writes is the same text."""

from __future__ import annotations

import sqlite3

import pytest

from backendai.errors import ConfigError
from backendai.update_terms import OpKind, Outcome, Step, StepStatus
from manager.statestore import StateStore
from manager.updates.journal import EventRecord, OpRecord, UpdateJournal

OLD_ROWS = [  # (step, status, final, outcome) as an older manager journaled them
    ("validate", "ok", 0, ""), ("download", "started", 0, ""), ("download", "ok", 0, ""),
    ("stop", "started", 0, ""), ("stop", "failed", 0, ""), ("rollback_start", "skipped", 0, ""),
    ("done", "failed", 1, "rolled_back"),
]


# The journal's tables as schema version 1 laid them out (before origin, leave_stopped
# and the cancel columns).
V1_SCHEMA = """
CREATE TABLE update_ops (id TEXT PRIMARY KEY, service TEXT NOT NULL, kind TEXT NOT NULL,
    from_version TEXT NOT NULL, to_version TEXT NOT NULL, state TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    finished REAL NOT NULL DEFAULT 0);
CREATE TABLE update_events (op_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT NOT NULL,
    status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', elapsed REAL NOT NULL DEFAULT 0,
    at REAL NOT NULL, final INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (op_id, seq));
CREATE TABLE releases (service TEXT NOT NULL, version TEXT NOT NULL, installed REAL NOT NULL,
    PRIMARY KEY (service, version));
CREATE TABLE release_pointers (service TEXT PRIMARY KEY, previous TEXT NOT NULL DEFAULT '');
"""


def write_v1_database(path, *, versioned: bool = True) -> None:
    """A manager.db as a version-1 manager left it, with one finished operation 'a'
    (versioned=False: from before components recorded their schema version)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(V1_SCHEMA)
        if versioned:
            db.executescript("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, "
                             "version INTEGER NOT NULL);"
                             "INSERT INTO schema_versions VALUES ('update_journal', 1);")
        db.execute("INSERT INTO update_ops VALUES ('a', 'svc', 'update', '1', '2', 'done', "
                   "'rolled_back', 'why', 1.0, 2.0)")
        for seq, (step, status, final, outcome) in enumerate(OLD_ROWS):
            db.execute("INSERT INTO update_events VALUES ('a', ?, ?, ?, '', 0, 1.0, ?, ?)",
                       (seq, step, status, final, outcome))
    finally:
        db.close()


@pytest.mark.parametrize("versioned", [True, False])
def test_old_rows_load_as_enums_and_new_rows_are_the_same_text(tmp_path, versioned):
    write_v1_database(tmp_path / "manager.db", versioned=versioned)
    store = StateStore(tmp_path / "manager.db")
    try:
        journal = UpdateJournal(store)  # migrates the tables to this version
        db = store.db
        op = journal.op("a")
        assert op is not None and op.kind is OpKind.UPDATE and op.outcome is Outcome.ROLLED_BACK
        assert (op.origin, op.leave_stopped, op.cancel_request) == ("", False, "")
        events = journal.events("a")
        assert [(e.step, e.status) for e in events][-3:] == [
            (Step.STOP, StepStatus.FAILED), (Step.ROLLBACK_START, StepStatus.SKIPPED),
            (Step.DONE, StepStatus.FAILED)]
        assert events[-1].outcome is Outcome.ROLLED_BACK and events[0].outcome is None

        journal.create_op(OpRecord("b", "svc", OpKind.ROLLBACK, "2", "1", created=3.0),
                          EventRecord("b", 0, Step.VALIDATE, StepStatus.OK, at=3.0))
        for step, status, final, outcome in OLD_ROWS[1:]:
            journal.append("b", Step(step), StepStatus(status), final=bool(final),
                           outcome=Outcome.parse(outcome))
        rows = db.execute("SELECT step, status, final, outcome FROM update_events "
                          "WHERE op_id = 'b' ORDER BY seq").fetchall()
        assert rows == OLD_ROWS
        assert db.execute("SELECT kind, outcome FROM update_ops WHERE id = 'b'").fetchone() \
            == ("rollback", "rolled_back")
    finally:
        store.close()


def test_outcomes_a_peer_reports_parse_or_are_unknown():
    assert [Outcome.parse(o.value) for o in Outcome] == list(Outcome)
    assert Outcome.parse("") is None and Outcome.parse("exploded") is None


def test_each_component_owns_its_schema_and_a_newer_one_is_refused(tmp_path):
    """The journal's tables are its own (with a version), created beside the services'
    tables; a database written by a newer manager is refused, not misread."""
    path = tmp_path / "manager.db"
    store = StateStore(path)
    UpdateJournal(store)
    versions = dict(store.db.execute("SELECT component, version FROM schema_versions"))
    assert versions == {"services": 1, "update_journal": 2}
    store.db.execute("UPDATE schema_versions SET version = 99 WHERE component = "
                     "'update_journal'")
    store.close()
    again = StateStore(path)
    try:
        with pytest.raises(ConfigError, match="'update_journal' tables of schema version 99"):
            UpdateJournal(again)
    finally:
        again.close()


DYING_MIGRATION = """
import os, sys
from pathlib import Path
from manager import statestore
from manager.updates import journal

def dying(db, table, columns):
    name, decl = next(iter(columns.items()))
    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")  # one column added...
    os._exit(137)  # ...and the manager is killed mid-migration

journal.add_missing_columns = dying
journal.UpdateJournal(statestore.StateStore(Path(sys.argv[1])))
"""


def test_kill9_during_the_migration_leaves_a_database_the_next_start_migrates(tmp_path):
    """The migration runs in one transaction with the new version number: a manager
    killed in the middle leaves the version-1 tables, and the next start migrates."""
    import subprocess

    from tests.conftest import PY, ROOT

    path = tmp_path / "manager.db"
    write_v1_database(path)
    res = subprocess.run([PY, "-c", DYING_MIGRATION, str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 137, res.stderr
    db = sqlite3.connect(path)
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(update_ops)")}
        version = db.execute("SELECT version FROM schema_versions WHERE component = "
                             "'update_journal'").fetchone()
    finally:
        db.close()
    assert "origin" not in columns and version == (1,)
    store = StateStore(path)
    try:
        journal = UpdateJournal(store)
        op = journal.op("a")
        assert op is not None and op.outcome is Outcome.ROLLED_BACK and op.origin == ""
        assert dict(store.db.execute("SELECT component, version FROM schema_versions")
                    )["update_journal"] == 2
    finally:
        store.close()


def test_a_failed_migration_changes_nothing(tmp_path):
    path = tmp_path / "manager.db"
    write_v1_database(path)
    store = StateStore(path)
    try:
        def broken(db: sqlite3.Connection, found: int) -> None:
            db.execute("ALTER TABLE update_ops ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
            raise RuntimeError("disk on fire")

        with pytest.raises(RuntimeError):
            store.ensure_schema("update_journal", 2, "", broken)
        columns = {r[1] for r in store.db.execute("PRAGMA table_info(update_ops)")}
        assert "origin" not in columns
        assert dict(store.db.execute("SELECT component, version FROM schema_versions")
                    )["update_journal"] == 1
    finally:
        store.close()
