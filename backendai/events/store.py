"""What the event log needs from a daemon's database: the one store interface the
manager's SQLite file and the hub's store (SQLite or PostgreSQL) implement.

Writes append events in id order; reads page through them; prune forgets the oldest;
cursors remember, per sink, the last id it delivered (durably, in the same database,
so a restarted daemon resumes each sink where it stopped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from backendai.events.model import Event, PageRequest


@dataclass(frozen=True, slots=True)
class Bounds:
    oldest_id: int  # the oldest id kept (0: none kept)
    last_id: int  # the newest id ever written (0: none yet); ids are never reused


class EventStore(Protocol):
    async def append(self, events: Sequence[Event]) -> int:
        """Write `events` in order in one transaction; the newest id written."""
        ...

    async def page(self, req: PageRequest, last_id: int) -> list[Event]:
        """At most req.limit events with id <= last_id matching the request, in its
        order (DeadlineExceeded when the query scans for too long)."""
        ...

    async def bounds(self) -> Bounds: ...

    async def prune(self, *, keep: int, before_time: float) -> int:
        """Forget events beyond the newest `keep` and those older than `before_time`
        (a Unix time; 0: none by age), in bounded chunks; how many were removed."""
        ...

    async def cursor(self, sink: str) -> int | None:
        """The last id `sink` delivered; None when it has no cursor yet."""
        ...

    async def save_cursor(self, sink: str, last_id: int) -> None: ...

    async def close(self) -> None: ...
