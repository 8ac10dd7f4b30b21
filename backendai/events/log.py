"""A daemon's event log: queues what happens, commits it, keeps it within retention,
and serves it to listings, watchers and sinks.

`emit()` never blocks and never fails: it queues the event (at most MAX_PENDING; beyond
that the oldest queued are dropped and counted, so a database that cannot be written
never grows memory). Queued events are committed either inside the next state write of
the daemon (`take_pending` / `committed`: the state and what led to it in one
transaction) or by the flusher task at the end of the loop turn, in one batch.

Readers page from the store; watchers follow from an id with nothing missed (a page at
a time from the store, woken by each commit: memory stays bounded whatever the
reader's speed). The pruner keeps the newest `retention_count` events and none older
than `retention_days`, pruning as soon as the count runs past it by a small slack (a
crash loop cannot outgrow it) and every PRUNE_INTERVAL seconds for age.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import structlog

from backendai.events.audit import Caller
from backendai.events.model import (
    Event,
    EventFilter,
    Page,
    PageRequest,
    check_known,
    make_event,
    page_of,
)
from backendai.events.store import EventStore

log = structlog.get_logger(__name__)

MAX_PENDING = 10_000
MAX_BATCH = 1000
WATCH_PAGE = 200
PRUNE_INTERVAL = 60.0
RETRY_INITIAL = 0.5
RETRY_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Retention:
    count: int = 100_000  # newest events kept
    days: float = 30.0  # none older (0: no age limit)

    @property
    def slack(self) -> int:
        """How far past `count` the history may run before it is pruned at once."""
        return max(50, self.count // 100)


class EventLog:
    def __init__(self, store: EventStore, *, retention: Retention | None = None,
                 source: str = "") -> None:
        """source: the daemon's name in the fleet, as sinks label its events."""
        self.store = store
        self.retention = retention or Retention()
        self.source = source
        self.last_id = 0
        self.oldest_id = 0
        self.dropped = 0
        self._pending: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._flush_wanted = asyncio.Event()
        self._prune_wanted = asyncio.Event()
        self._tick = asyncio.Event()
        self._closed = False
        self._opened = False

    # ---- writing ----------------------------------------------------------------------

    def emit(self, kind: str, subject: str, message: str = "",
             fields: Mapping[str, object] | None = None, *, who: Caller | None = None,
             result: str = "") -> None:
        """Queue an event (any thread). `who`: the caller, on audit events and on the
        state writes an operator asked for."""
        ev = make_event(kind, subject, message, fields, at=time.time(),
                        actor=who.actor if who else "", transport=who.transport if who else "",
                        peer=who.peer if who else "", result=result)
        self.queue(ev)

    def queue(self, ev: Event) -> None:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._drop_oldest(len(self._pending) - MAX_PENDING + 1)
            self._pending.append(ev)
        loop = self._loop
        if loop is None:
            return  # the flusher picks it up once it runs
        if threading.get_ident() == self._loop_thread:
            self._flush_wanted.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to flush to
                loop.call_soon_threadsafe(self._flush_wanted.set)

    def take_pending(self) -> list[Event]:
        """The queued events, for a state write to commit with its own transaction
        (give them back with `put_back` if it fails, report `committed` if it does)."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def put_back(self, events: Sequence[Event]) -> None:
        """Events a failed write took, back at the head of the queue. Events queued
        while that write was in progress (a remote database's failure takes a while)
        stay behind them; beyond MAX_PENDING the oldest go, as in queue()."""
        with self._lock:
            self._pending.extendleft(reversed(events))
            if len(self._pending) > MAX_PENDING:
                self._drop_oldest(len(self._pending) - MAX_PENDING)

    def _drop_oldest(self, n: int) -> None:
        """(With the lock held.) Drop the n oldest queued events; count and log it."""
        for _ in range(n):
            self._pending.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("events.dropped", dropped=self.dropped,
                            reason="the history cannot be written fast enough")

    def committed(self, last_id: int, count: int = 0) -> None:
        """Events up to `last_id` are in the store: wake the watchers and sinks."""
        if last_id <= self.last_id:
            return
        if not self.oldest_id:
            self.oldest_id = last_id - max(count, 1) + 1
        self.last_id = last_id
        old, self._tick = self._tick, asyncio.Event()
        old.set()
        if self.last_id - self.oldest_id + 1 > self.retention.count + self.retention.slack:
            self._prune_wanted.set()

    async def refresh(self) -> None:
        """Learn the store's bounds again: events another process wrote (hubs sharing a
        database) become visible to this log's watchers and sinks."""
        bounds = await self.store.bounds()
        self.oldest_id = bounds.oldest_id
        self.committed(bounds.last_id)

    async def flush(self) -> None:
        """Commit everything queued now (the flusher does this on its own)."""
        while True:
            batch = self.take_pending()
            if not batch:
                return
            for start in range(0, len(batch), MAX_BATCH):
                part = batch[start:start + MAX_BATCH]
                try:
                    last = await self.store.append(part)
                except BaseException:
                    self.put_back(batch[start:])
                    raise
                self.committed(last, len(part))

    # ---- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Read the bounds; bind to the running loop. Idempotent."""
        if self._opened:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        bounds = await self.store.bounds()
        self.oldest_id, self.last_id = bounds.oldest_id, bounds.last_id
        self._opened = True
        if self._pending:
            self._flush_wanted.set()

    async def run(self) -> None:
        """Flush and prune until cancelled (close() then flushes what is left)."""
        await self.open()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._flusher(), name="events-flush")
            tg.create_task(self._pruner(), name="events-prune")

    async def _flusher(self) -> None:
        delay = RETRY_INITIAL
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            try:
                await self.flush()
                delay = RETRY_INITIAL
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the daemon
                log.warning("events.write_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                self._flush_wanted.set()

    async def _pruner(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRUNE_INTERVAL):
                    await self._prune_wanted.wait()
            self._prune_wanted.clear()
            try:
                await self.prune()
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                log.warning("events.prune_failed", error=str(exc))

    async def prune(self, now: float | None = None) -> int:
        r = self.retention
        now = time.time() if now is None else now
        removed = await self.store.prune(keep=r.count,
                                         before_time=now - r.days * 86400 if r.days else 0.0)
        bounds = await self.store.bounds()
        self.oldest_id = bounds.oldest_id
        if removed:
            log.debug("events.pruned", removed=removed, oldest_id=self.oldest_id)
        return removed

    async def close(self) -> None:
        """Stop serving watchers and commit what is queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._tick.set()
        if self._opened:
            with contextlib.suppress(Exception):
                await self.flush()
        await self.store.close()

    # ---- reading ----------------------------------------------------------------------

    async def page(self, req: PageRequest) -> Page:
        last = self.last_id
        check_known(last, after_id=req.after_id, before_id=req.before_id)
        found = await self.store.page(req, last) if last else []
        return page_of(req, found, last, self.oldest_id)

    async def watch(self, flt: EventFilter, *, after_id: int = 0,
                    from_now: bool = False) -> AsyncIterator[Event]:
        """Events after `after_id` (or from now) matching `flt`, then every new one as it
        is committed, until the log closes."""
        if from_now:
            cursor = self.last_id
        else:
            check_known(self.last_id, after_id=after_id)
            cursor = after_id
        while not self._closed:
            tick = self._tick
            upto = self.last_id
            if upto <= cursor:
                await tick.wait()
                continue
            found = await self.store.page(PageRequest(flt, after_id=cursor, limit=WATCH_PAGE),
                                          upto)
            for ev in found:
                yield ev
            cursor = found[-1].id if len(found) >= WATCH_PAGE else upto

    async def wait_beyond(self, last_id: int) -> None:
        """Return once an id above `last_id` is committed (or the log closes)."""
        while self.last_id <= last_id and not self._closed:
            await self._tick.wait()
