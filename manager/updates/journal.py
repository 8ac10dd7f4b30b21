"""The updater's journal in the manager's SQLite file (tables in statestore.SCHEMA).

An operation row plus its ordered events: each step's "started" event is written
(durably: synchronous=FULL) before the step acts, so a restarted manager knows exactly
where an interrupted operation stood. Events are also what WatchUpdate replays, and
each is also written to the event history (`update.step`, the last one
`update.outcome`) in the same transaction.

Records carry the enums of backendai/update_terms.py; the tables hold their `.value`
text, as they always have (older databases load unchanged).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from backendai.errors import InvalidArgument
from backendai.events.model import Event, make_event
from backendai.update_terms import OpKind, Outcome, Step, StepStatus, outcome_text
from manager.statestore import StateStore, add_missing_columns

MAX_OPS_KEPT = 200
OP_ID_RE = re.compile(r"[0-9a-f]{32}")


def is_operation_id(value: object) -> bool:
    return isinstance(value, str) and OP_ID_RE.fullmatch(value) is not None


def check_operation_id(value: object) -> str:
    """An operation id as the journal makes them (uuid4 hex)."""
    if not isinstance(value, str) or not is_operation_id(value):
        raise InvalidArgument("operation_id must be 32 lowercase hex characters")
    return value


@dataclass(frozen=True, slots=True)
class OpRecord:
    id: str
    service: str
    kind: OpKind
    from_version: str
    to_version: str
    state: str = "running"            # "running" | "done"
    outcome: Outcome | None = None    # set when done
    message: str = ""
    created: float = 0.0
    finished: float = 0.0
    origin: str = ""                  # who asked (UpdateRequest.origin); "" an operator
    leave_stopped: bool = False       # the service was stopped: do not start it
    cancel_request: str = ""          # "stop" | "start" | "restart" that cancelled it
    cancel_reason: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    op_id: str
    seq: int
    step: Step
    status: StepStatus
    message: str = ""
    elapsed: float = 0.0
    at: float = 0.0
    final: bool = False
    outcome: Outcome | None = None    # on the final event


_SELECT_OP = ("SELECT id, service, kind, from_version, to_version, state, outcome, message, "
              "created, finished, origin, leave_stopped, cancel_request, cancel_reason")
_SELECT_EV = "SELECT op_id, seq, step, status, message, elapsed, at, final, outcome"


def _op(row: Any) -> OpRecord:
    (op_id, service, kind, from_version, to_version, state, outcome, message, created,
     finished, origin, leave_stopped, cancel_request, cancel_reason) = row
    return OpRecord(op_id, service, OpKind(kind), from_version, to_version, state,
                    Outcome.parse(outcome), message, created, finished, origin,
                    bool(leave_stopped), cancel_request, cancel_reason)


def _event(r: Any) -> EventRecord:
    return EventRecord(r[0], r[1], Step(r[2]), StepStatus(r[3]), r[4], r[5], r[6], bool(r[7]),
                       Outcome.parse(r[8]))


def history_event(op: OpRecord, ev: EventRecord) -> Event:
    """The event history's line for a journaled step event."""
    what = f"{op.kind.value} {op.from_version or '(none)'} -> {op.to_version}"
    if ev.final:
        text = f"{what}: {outcome_text(ev.outcome)}"
    else:
        text = f"{what}: {ev.step.value} {ev.status.value}"
    if ev.message:
        text += f" ({ev.message})"
    return make_event(
        "update.outcome" if ev.final else "update.step", f"service/{op.service}", text,
        {"operation": op.id, "operation_kind": op.kind.value, "step": ev.step.value,
         "status": ev.status.value, "from_version": op.from_version,
         "to_version": op.to_version, "elapsed_seconds": f"{ev.elapsed:.3f}",
         "outcome": outcome_text(ev.outcome) or None}, at=ev.at or time.time())


# 1: the first layout; 2: update_ops gains origin, leave_stopped and the cancel request.
SCHEMA_VERSION = 2
# Each step is recorded before it acts (see updater.py); releases and the pointer to the
# previous one are what a rollback switches back to.
SCHEMA = """
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
    finished REAL NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT '',
    leave_stopped INTEGER NOT NULL DEFAULT 0,
    cancel_request TEXT NOT NULL DEFAULT '',
    cancel_reason TEXT NOT NULL DEFAULT ''
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


# What version 2 added to update_ops (a database of version 1, or of the layout before
# versions were recorded, gets these columns with their defaults).
V2_COLUMNS = {"origin": "TEXT NOT NULL DEFAULT ''",
              "leave_stopped": "INTEGER NOT NULL DEFAULT 0",
              "cancel_request": "TEXT NOT NULL DEFAULT ''",
              "cancel_reason": "TEXT NOT NULL DEFAULT ''"}


def _migrate(db: sqlite3.Connection, found: int) -> None:
    if found < 2:
        add_missing_columns(db, "update_ops", V2_COLUMNS)


class UpdateJournal:
    def __init__(self, store: StateStore) -> None:
        store.ensure_schema("update_journal", SCHEMA_VERSION, SCHEMA, _migrate)
        self.store = store
        self.db: sqlite3.Connection = store.db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[list[Event]]:
        """One transaction; the event history's lines for what it journals are added to
        the list it yields, and written in it."""
        with self.store.transaction() as history:
            yield history

    def create_op(self, op: OpRecord, first: EventRecord) -> None:
        with self._tx() as history:
            history.append(history_event(op, first))
            self.db.execute("INSERT INTO update_ops ("
                            "id, service, kind, from_version, to_version, state, outcome, message, "
                            "created, finished, origin, leave_stopped, cancel_request, "
                            "cancel_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (op.id, op.service, op.kind.value, op.from_version,
                             op.to_version, op.state, outcome_text(op.outcome), op.message,
                             op.created, op.finished, op.origin, int(op.leave_stopped),
                             op.cancel_request, op.cancel_reason))
            self._insert_event(first)
        self._trim(op.service)

    def _insert_event(self, ev: EventRecord) -> None:
        self.db.execute("INSERT INTO update_events ("
                        "op_id, seq, step, status, message, elapsed, at, final, outcome)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (ev.op_id, ev.seq, ev.step.value, ev.status.value, ev.message,
                         ev.elapsed, ev.at, int(ev.final), outcome_text(ev.outcome)))

    def append(self, op_id: str, step: Step, status: StepStatus, message: str = "",
               elapsed: float = 0.0, *, final: bool = False,
               outcome: Outcome | None = None) -> EventRecord:
        with self._tx() as history:
            ev = self._add(op_id, step, status, message, elapsed=elapsed, final=final,
                          outcome=outcome, history=history)
            if final:
                self.db.execute("UPDATE update_ops SET state='done', outcome=?, message=?, "
                                "finished=? WHERE id=?", (outcome_text(outcome), message, ev.at,
                                                          op_id))
        return ev

    def _add(self, op_id: str, step: Step, status: StepStatus, message: str, *,
             history: list[Event], elapsed: float = 0.0, final: bool = False,
             outcome: Outcome | None = None) -> EventRecord:
        """The operation's next event (in the caller's transaction, with its line in the
        event history)."""
        row = self.db.execute("SELECT COALESCE(MAX(seq), -1) FROM update_events "
                              "WHERE op_id = ?", (op_id,)).fetchone()
        ev = EventRecord(op_id, int(row[0]) + 1, step, status, message, elapsed, time.time(),
                         final, outcome)
        self._insert_event(ev)
        op = self.op(op_id)
        if op is not None:
            history.append(history_event(op, ev))
        return ev

    def cancel(self, op_id: str, request: str, reason: str) -> EventRecord:
        """Record that a forced lifecycle request cancels the operation (its `cancel`
        event and the op's columns in one transaction): a manager that crashes during
        the cancel finishes it as a cancel on its next start."""
        with self._tx() as history:
            self.db.execute("UPDATE update_ops SET cancel_request=?, cancel_reason=? "
                            "WHERE id=?", (request, reason, op_id))
            return self._add(op_id, Step.CANCEL, StepStatus.OK, reason, history=history)

    def op(self, op_id: str) -> OpRecord | None:
        row = self.db.execute(_SELECT_OP + " FROM update_ops WHERE id = ?",
                              (op_id,)).fetchone()
        return _op(row) if row else None

    def running_ops(self) -> list[OpRecord]:
        rows = self.db.execute(_SELECT_OP + " FROM update_ops WHERE state = 'running' "
                               "ORDER BY created").fetchall()
        return [_op(r) for r in rows]

    def last_done(self, service: str) -> OpRecord | None:
        row = self.db.execute(_SELECT_OP + " FROM update_ops WHERE service = ? AND "
                              "state = 'done' ORDER BY finished DESC LIMIT 1",
                              (service,)).fetchone()
        return _op(row) if row else None

    def last_op(self, service: str) -> OpRecord | None:
        """The service's newest operation, running or done."""
        row = self.db.execute(_SELECT_OP + " FROM update_ops WHERE service = ? "
                              "ORDER BY created DESC LIMIT 1", (service,)).fetchone()
        return _op(row) if row else None

    def last_with_origin(self, service: str, origin: str) -> OpRecord | None:
        """The service's newest operation issued with `origin` (kept operations only)."""
        row = self.db.execute(_SELECT_OP + " FROM update_ops WHERE service = ? AND "
                              "origin = ? ORDER BY created DESC LIMIT 1",
                              (service, origin)).fetchone()
        return _op(row) if row else None

    def events(self, op_id: str, after: int = -1) -> list[EventRecord]:
        rows = self.db.execute(_SELECT_EV + " FROM update_events WHERE op_id = ? AND "
                               "seq > ? ORDER BY seq", (op_id, after)).fetchall()
        return [_event(r) for r in rows]

    def _trim(self, service: str) -> None:
        """Keep the newest MAX_OPS_KEPT finished operations per service."""
        old = self.db.execute(
            "SELECT id FROM update_ops WHERE service = ? AND state = 'done' "
            "ORDER BY created DESC LIMIT -1 OFFSET ?", (service, MAX_OPS_KEPT)).fetchall()
        for (op_id,) in old:
            with self._tx():
                self.db.execute("DELETE FROM update_events WHERE op_id = ?", (op_id,))
                self.db.execute("DELETE FROM update_ops WHERE id = ?", (op_id,))

    # ---- releases on disk -----------------------------------------------------------

    def record_release(self, service: str, version: str) -> None:
        self.db.execute("INSERT INTO releases (service, version, installed) VALUES (?,?,?) "
                        "ON CONFLICT(service, version) DO UPDATE SET installed=excluded.installed",
                        (service, version, time.time()))

    def forget_release(self, service: str, version: str) -> None:
        self.db.execute("DELETE FROM releases WHERE service = ? AND version = ?",
                        (service, version))

    def installed(self, service: str) -> dict[str, float]:
        rows = self.db.execute("SELECT version, installed FROM releases WHERE service = ?",
                               (service,)).fetchall()
        return {str(v): float(t) for v, t in rows}

    def previous(self, service: str) -> str:
        row = self.db.execute("SELECT previous FROM release_pointers WHERE service = ?",
                              (service,)).fetchone()
        return str(row[0]) if row else ""

    def set_previous(self, service: str, version: str) -> None:
        self.db.execute("INSERT INTO release_pointers (service, previous) VALUES (?, ?) "
                        "ON CONFLICT(service) DO UPDATE SET previous=excluded.previous",
                        (service, version))
