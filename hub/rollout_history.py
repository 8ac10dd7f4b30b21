"""What a rollout's recorded notes (the numbered log WatchRollout serves) become in the
hub's event history, which both store backends write in the same transaction as the
rollout's new state (pure).

Kinds are the note's kind under `rollout.` (`rollout.created`, `rollout.wave.started`,
`rollout.host.succeeded`, ...). A note about one host is the host's event (subject
`host/NAME`: "which rollout changed this host"); the others are the rollout's (subject
`rollout/ID`). Every one carries the rollout id, its version and the note's index.

The manager's step-by-step progress (`host.step`: "download started", "verify ok", ...,
about sixteen per host and update) stays in the rollout's own log and is not copied: each
manager's history has it (`update.step`), and copying it made a 10,000-host rollout
write 200,000 history rows, twice the default retention, so that one rollout pushed
the hub's audit trail and every older event out of its history. The host's decisive
moments (started, accepted, verifying, succeeded, failed, rolled back, ...) are there.

`note_event` says what a note's event is; `note_rows` makes the same events' table rows
(backendai/events/sqlite_store.py event_row) directly, without an Event per note: a
10,000-host rollout writes ~40,000 of them, and the Event objects, their checks and a
json.dumps of a new dict for each cost the hub ~5 % of the rollout's CPU. Both leave out
what `in_history` leaves out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) uses
from typing import Any

from backendai.events.model import (
    KIND_RE,
    MAX_FIELD_VALUE,
    MAX_KIND,
    MAX_MESSAGE,
    MAX_SUBJECT,
    Event,
    cut,
    make_event,
)
from hub.rollout_model import Note, Rollout

PROGRESS_KIND = "host.step"  # the manager's own steps, as its WatchUpdate reports them


def in_history(n: Note) -> bool:
    """Whether a note of the rollout's log is also an event of the hub's history."""
    return n.kind != PROGRESS_KIND


def note_event(r: Rollout, n: Note) -> Event:
    kind = n.kind if n.kind.startswith("rollout.") else f"rollout.{n.kind}"
    if not KIND_RE.fullmatch(kind):
        kind = "rollout.note"
    subject = f"host/{n.host}" if n.host else f"rollout/{r.id}"
    text = f"rollout {r.id} ({r.version}): {n.message or n.kind}"
    c = n.counts
    return make_event(kind, subject, text, {
        "rollout": r.id, "version": r.version, "index": n.index, "state": n.state.value,
        "host": n.host or None, "wave": n.wave if n.wave >= 0 else None,
        "host_state": n.host_state.value if n.host_state is not None else None,
        "succeeded": c.succeeded, "failed": c.failed + c.unreachable, "total": c.total,
        "final": n.final or None}, at=n.at)


def note_events(r: Rollout, notes: Iterable[Note]) -> list[Event]:
    return [note_event(r, n) for n in notes if in_history(n)]


@functools.lru_cache(maxsize=256)  # the engine's kinds: a few dozen words
def _kind(kind: str) -> str:
    out = kind if kind.startswith("rollout.") else f"rollout.{kind}"
    if not KIND_RE.fullmatch(out):
        out = "rollout.note"
    if len(out) > MAX_KIND:
        raise ValueError(f"not an event kind: {out!r}")  # as make_event: a bug in the engine
    return out


def _value(text: str) -> str:
    """A field value as JSON (make_event cuts every value)."""
    return encode_basestring(cut(text, MAX_FIELD_VALUE))


def note_rows(r: Rollout, notes: Iterable[Note]) -> list[tuple[Any, ...]]:
    """The event history's rows of `notes`, equal to
    `[event_row(e) for e in note_events(r, notes)]` (tests/test_events_hub.py checks)."""
    head = '{"rollout":' + _value(r.id) + ',"version":' + _value(r.version) + ',"index":"'
    own_subject = cut(f"rollout/{r.id}", MAX_SUBJECT)
    prefix = f"rollout {r.id} ({r.version}): "
    rows = []
    for n in notes:
        if n.kind == PROGRESS_KIND:  # in_history, inlined: 200,000 notes per rollout
            continue
        host = n.host
        c = n.counts
        fields = [head, str(n.index), '","state":', _value(n.state.value)]
        if host:
            fields += (',"host":', _value(host))
        if n.wave >= 0:
            fields += (',"wave":"', str(n.wave), '"')
        if n.host_state is not None:
            fields += (',"host_state":', _value(n.host_state.value))
        fields += (',"succeeded":"', str(c.succeeded), '","failed":"',
                   str(c.failed + c.unreachable), '","total":"', str(c.total), '"')
        fields.append(',"final":"true"}' if n.final else "}")
        rows.append((n.at, _kind(n.kind),
                     cut(f"host/{host}", MAX_SUBJECT) if host else own_subject,
                     cut(prefix + (n.message or n.kind), MAX_MESSAGE),
                     "".join(fields), "", "", "", "", ""))
    return rows
