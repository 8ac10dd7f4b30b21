"""What a rollout's recorded notes (the numbered log WatchRollout serves) become in the
hub's event history, which both store backends write in the same transaction as the
rollout's new state (pure).

Kinds are the note's kind under `rollout.` (`rollout.created`, `rollout.wave.started`,
`rollout.host.succeeded`, ...). A note about one host is the host's event (subject
`host/NAME`: "which rollout changed this host"); the others are the rollout's (subject
`rollout/ID`). Every one carries the rollout id, its version and the note's index.
"""

from __future__ import annotations

from collections.abc import Iterable

from backendai.events.model import KIND_RE, Event, make_event
from hub.rollout_model import Note, Rollout


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
    return [note_event(r, n) for n in notes]
