"""A rollout's notes in the event history: `note_rows` (the rows both stores write) are
exactly the rows of `note_events` (the events the notes are), for every kind of note a
rollout makes and for hostile values (long, quoted, non-ASCII text)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from backendai.events.model import MAX_FIELD_VALUE, MAX_MESSAGE, MAX_SUBJECT
from backendai.events.sqlite_store import event_row
from hub import rollout_engine as E
from hub.rollout_history import note_events, note_rows
from tests.test_rollout_engine import Fleet, start


def rows_of_events(r, notes):
    return [event_row(e) for e in note_events(r, notes)]


def rolled_back_rollout():
    r, notes, actions = start(waves=["1", "3", "100%"], max_failures_per_wave="1")
    last_wave = [h.name for h in r.hosts.values() if h.wave == 2]
    fleet = Fleet(r, fail=set(last_wave[:2]))
    fleet.run(actions)
    return fleet.r, notes + fleet.notes


def test_rows_are_the_events_rows_through_a_whole_rollout():
    r, notes = rolled_back_rollout()
    assert r.state == E.RolloutState.ROLLED_BACK
    kinds = {n.kind for n in notes}
    assert {"created", "wave.started", "wave.done"} <= kinds or len(kinds) > 5
    assert any(n.host for n in notes) and any(not n.host for n in notes)
    assert any(n.final for n in notes) and any(n.host_state is not None for n in notes)
    assert note_rows(r, notes) == rows_of_events(r, notes)
    assert note_rows(r, []) == []


@pytest.mark.parametrize(("version", "host", "message", "kind"), [
    ('2.0"\\\n', 'h"1', 'quote " backslash \\ newline \n tab \t', "host.failed"),
    ("é-ü-☃-\u2028", "hôte", "nön-ascii ☃ \x00 \x1f", "wave.started"),
    ("v" * (MAX_FIELD_VALUE + 50), "h" * (MAX_SUBJECT + 10), "m" * (MAX_MESSAGE + 10),
     "rollout.finished"),
    ("1.0", "", "", "Not A Kind!"),
])
def test_hostile_values_give_the_same_rows(version, host, message, kind):
    r, notes = rolled_back_rollout()
    r = dataclasses.replace(r, version=version)
    odd = [dataclasses.replace(n, host=host, message=message, kind=kind) for n in notes[:5]]
    odd.append(dataclasses.replace(notes[0], wave=-1, host_state=None, final=True))
    odd.append(dataclasses.replace(notes[0], index=2**62, at=1e12))
    assert note_rows(r, odd) == rows_of_events(r, odd)
    for row in note_rows(r, odd):
        assert isinstance(json.loads(row[4]), dict)


def test_a_kind_too_long_for_the_history_is_refused_by_both():
    r, notes = rolled_back_rollout()
    long = [dataclasses.replace(notes[0], kind="x" * 150)]
    with pytest.raises(ValueError, match="not an event kind"):
        note_events(r, long)
    with pytest.raises(ValueError, match="not an event kind"):
        note_rows(r, long)


def test_the_managers_step_progress_stays_out_of_the_history():
    """`host.step` notes (a manager's "download started", "verify ok", ...) are the
    rollout log's alone; every other note, host notes included, is history."""
    r, notes = rolled_back_rollout()
    host_note = next(n for n in notes if n.host)
    steps = [dataclasses.replace(host_note, kind="host.step", message=f"{s} ok")
             for s in ("download", "verify", "switch")]
    mixed = [notes[0], *steps, host_note]
    rows = note_rows(r, mixed)
    assert [row[1] for row in rows] == [f"rollout.{notes[0].kind}".replace(
        "rollout.rollout.", "rollout."), f"rollout.{host_note.kind}"]
    assert rows == rows_of_events(r, mixed)
    assert [e.fields["index"] for e in note_events(r, mixed)] == [
        str(notes[0].index), str(host_note.index)]
    assert note_rows(r, steps) == []
