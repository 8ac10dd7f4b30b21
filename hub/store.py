"""The hub's store: one interface (`HubStore`), two backends — SQLite in state_dir
(hub/store_sqlite.py, the default, one hub) and PostgreSQL (hub/store_postgres.py,
several hubs sharing it, one of them leading).

What every backend keeps: rollouts (a JSON core), their per-host rows and numbered event
log, the hosts that registered, the leader's lease (holder, address, epoch, expiry), and
the hub's event history (`history`, backendai/events: rollout notes and registrations
are written into it in their own transactions). A rollout's new state, changed host
rows and new events are written in ONE transaction that first checks the writer's
lease (holder and epoch, `save(..., fence=)`) is still current and unexpired: a hub
that was deposed while paused or partitioned cannot change anything; its write raises
LeaseLost and nothing of it is kept. (The holder is checked too: a database restored or
failed over to a replica that lost the last lease changes could hand the same epoch
number to another hub.)

Time in the lease is the database's (PostgreSQL's now()), never a hub's clock, so clock
skew between hubs does not move a lease. Readers are woken through `ChangeFeed`s
(PostgreSQL: LISTEN/NOTIFY) but always read by index, so a missed wake-up loses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backendai.events.model import Event
from backendai.events.store import EventStore
from hub.config import HostEntry, HubConfig
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

if TYPE_CHECKING:
    from backendai.events.log import EventLog

EVENT_PAGE = 1000
CORE_SKIP = frozenset({"hosts", "tally", "packages"})  # own rows; derived; not stored


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease row as the database sees it at `now` (database seconds since the epoch)."""

    holder: str
    address: str
    epoch: int
    expires_at: float
    now: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.now)

    @property
    def live(self) -> bool:
        return self.expires_at > self.now


@dataclass(frozen=True, slots=True)
class Fence:
    """What a rollout write must still hold: the lease, by this holder, at this epoch."""

    holder: str
    epoch: int


class ChangeFeed:
    """A generation counter that wakes waiters: `gen = feed.generation`, read, then
    `await feed.wait_past(gen, timeout)` returns at once if anything changed since."""

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()

    def poke(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_past(self, generation: int, timeout: float) -> None:
        if self.generation != generation:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass


class HubStore(Protocol):
    backend: str
    where: str                     # the database, for logs (never a password)
    rollout_changes: ChangeFeed    # a rollout or its event log changed (any hub)
    lease_changes: ChangeFeed      # the lease was released (a follower may take it now)
    host_changes: ChangeFeed       # a host registered
    event_changes: ChangeFeed      # another hub wrote to the event history

    @property
    def history(self) -> EventStore:
        """The event history (backendai/events), in the same database."""
        ...

    def attach_events(self, events: EventLog) -> None:
        """Report the history lines written with rollouts and hosts to this log."""
        ...

    # ---- rollouts (writes fenced by the lease epoch) --------------------------------
    async def save(self, r: Rollout, hosts: Iterable[HostRun], notes: Iterable[Note], *,
                   fence: Fence) -> None: ...
    async def prune(self, keep: int, *, fence: Fence) -> int: ...
    async def load(self, rollout_id: str) -> Rollout | None: ...
    async def ids(self, *, limit: int, active_only: bool = False) -> list[str]: ...
    async def is_active(self, rollout_id: str) -> bool: ...
    async def events(self, rollout_id: str, from_index: int,
                     limit: int = EVENT_PAGE) -> list[Note]: ...

    # ---- registered hosts ------------------------------------------------------------
    async def save_host(self, entry: HostEntry, at: float,
                        history: Sequence[Event] = ()) -> None:
        """Save, with `history` in the same transaction."""
        ...
    async def registered_hosts(self) -> list[HostEntry]: ...
    async def hosts_since(self, seq: int) -> tuple[list[HostEntry], int]: ...

    # ---- the leader's lease (database time) ------------------------------------------
    async def acquire_lease(self, hub_id: str, address: str, ttl: float, *,
                            only_if_expired: bool = False) -> tuple[Lease, bool]: ...
    async def renew_lease(self, hub_id: str, epoch: int, ttl: float) -> Lease | None: ...
    async def release_lease(self, hub_id: str, epoch: int) -> None: ...
    async def read_lease(self) -> Lease | None: ...

    # ---- lifecycle -------------------------------------------------------------------
    async def run(self) -> None: ...
    async def close(self) -> None: ...


# ---------------------------------------------------------------- encoding (shared)

def encode_core(r: Rollout) -> str:
    return json.dumps(as_dict_fields(r, skip=CORE_SKIP))


def encode_host(h: HostRun) -> str:
    return json.dumps(host_row(h))


def encode_note(n: Note) -> str:
    return json.dumps(note_row(n))


def encode_entry(entry: HostEntry) -> str:
    return json.dumps(as_dict(entry))


def decode_entry(text: str) -> HostEntry:
    d: dict[str, Any] = json.loads(text)
    return HostEntry(**d)


def decode_host(text: str) -> HostRun:
    d: dict[str, Any] = json.loads(text)
    return HostRun(**{**d, "state": HostState(d["state"])})


def decode_rollout(core_text: str, host_texts: Iterable[str]) -> Rollout:
    hosts = [decode_host(h) for h in host_texts]
    hosts.sort(key=lambda h: h.wave)  # plan order: by wave, then insertion
    core: dict[str, Any] = json.loads(core_text)
    core["strategy"] = Strategy(**{**core["strategy"], "waves": tuple(core["strategy"]["waves"])})
    core["state"] = RolloutState(core["state"])
    core["paused_from"] = RolloutState(core["paused_from"]) if core["paused_from"] else None
    core["specs"] = tuple(core["specs"])
    core["target_hosts"] = tuple(core["target_hosts"])
    return Rollout(**core, hosts={h.name: h for h in hosts})


def note_from(d: dict[str, Any]) -> Note:
    return Note(**{**d, "state": RolloutState(d["state"]),
                   "host_state": HostState(d["host_state"]) if d["host_state"] else None,
                   "counts": Counts(**d["counts"])})


def decode_note(text: str) -> Note:
    return note_from(json.loads(text))


# ---------------------------------------------------------------- opening

async def open_store(cfg: HubConfig, *, migrate: bool | None = None) -> HubStore:
    """The configured backend, its schema checked (and migrated when allowed). The
    PostgreSQL backend is imported only when configured (psycopg loads only then)."""
    allow = cfg.store.migrate if migrate is None else migrate
    if cfg.store.backend == "postgresql":
        from hub.store_postgres import PostgresStore  # noqa: PLC0415 - psycopg only here

        return await PostgresStore.open(cfg.store, migrate=allow,
                                        transaction_limit=cfg.ha.lease_ttl)
    from hub.store_sqlite import SqliteStore  # noqa: PLC0415

    return SqliteStore(sqlite_path(cfg.state_dir), migrate=allow)


def sqlite_path(state_dir: Path) -> Path:
    return state_dir / "hub.db"
