"""One task per sink: read events after the sink's cursor, deliver them, move the cursor.

At least once, in id order: a batch (at most `batch_size` events, read from the store,
so memory stays bounded however far behind the sink is) is delivered, and only then
the cursor, stored in the daemon's database, moves past it. A failed delivery is
retried with capped, jittered backoff until it succeeds; a daemon restart (or kill -9)
resumes from the stored cursor, so events are never lost within retention and repeated
at most once per interrupted batch. A sink that fell behind the retention window
resumes from the oldest event kept and logs how many it missed (`events.sink_gap`).

Deliveries never block the daemon: each runs in this task with its own timeout, and
the store reads happen in a worker thread. A daemon that stops cleanly calls `stop`: a
delivery in flight ends (within a grace) and its cursor is stored, so a clean restart
repeats nothing; only a kill -9 (or a grace run out) repeats its batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from backendai.errors import BackendAIError
from backendai.events.config import SinkConfig
from backendai.events.log import EventLog
from backendai.events.model import Event, EventFilter, PageRequest

log = structlog.get_logger(__name__)

SAFETY_MARGIN = 5.0  # seconds beyond a sink's own timeout before a delivery is abandoned


class Sink(Protocol):
    name: str

    @property
    def shown(self) -> str: ...

    async def deliver(self, events: Sequence[Event]) -> int:
        """Deliver a prefix of `events` (at least one, in order); how many are done.
        Raises DeliveryFailed (a BackendAIError) when none could be."""
        ...

    async def close(self) -> None: ...


def make_sink(cfg: SinkConfig, *, source: str, prefix: str = "event_sinks") -> Sink:
    """The sink a `[[event_sinks]]` table describes (reads its secret and TLS files:
    ConfigError naming the key when one is unusable)."""
    key = f"{prefix}.{cfg.name}"
    if cfg.type == "jsonl":
        from backendai.events.sinks.jsonl import JsonlSink  # noqa: PLC0415

        return JsonlSink(cfg.name, cfg.path, source=source, timeout=cfg.timeout)
    # Only daemons with an HTTP sink load ssl, hmac and h11's client side.
    from backendai.events.sinks.http_post import target  # noqa: PLC0415

    where = target(cfg.url, ca_file=cfg.ca_file, client_cert=cfg.client_cert,
                   client_key=cfg.client_key, credentials_file=cfg.credentials_file,
                   prefix=key)
    if cfg.type == "webhook":
        from backendai.events.sinks.webhook import WebhookSink, read_secret  # noqa: PLC0415

        secret = read_secret(cfg.secret_file, f"{key}.secret_file") if cfg.secret_file \
            else None
        return WebhookSink(cfg.name, where, source=source, timeout=cfg.timeout,
                           secret=secret)
    from backendai.events.sinks.opensearch import BulkSink  # noqa: PLC0415

    return BulkSink(cfg.name, where, index=cfg.index, source=source, timeout=cfg.timeout,
                    max_docs=cfg.batch_size)


def retry_delay(failures: int, initial: float, cap: float, roll: float) -> float:
    """Capped exponential backoff with jitter: the n-th failure waits between half and
    all of min(cap, initial * 2^(n-1))."""
    window = min(cap, initial * 2.0 ** min(max(failures - 1, 0), 40))
    return float(window * (0.5 + roll / 2))


class SinkRunner:
    def __init__(self, events: EventLog, sink: Sink, cfg: SinkConfig, *,
                 roll: Callable[[], float] = random.random) -> None:
        self.events = events
        self.sink = sink
        self.cfg = cfg
        self.roll = roll
        self.cursor = 0
        self.delivered = 0  # events delivered since start
        self.failures = 0  # consecutive failed deliveries
        self.last_error = ""
        self._stopping = asyncio.Event()

    async def stop(self, task: asyncio.Task[None], grace: float) -> None:
        """End `task` (this runner's `run`) cleanly: no new delivery starts, the one in
        flight may finish and store its cursor within `grace` seconds; then it is
        cancelled. Returns once the task has ended."""
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    @property
    def name(self) -> str:
        return self.cfg.name

    async def _start_cursor(self) -> int:
        store = self.events.store
        cursor = await store.cursor(self.name)
        if cursor is None:
            cursor = self.events.last_id if self.cfg.start == "now" else 0
            await store.save_cursor(self.name, cursor)
            log.info("events.sink_new", sink=self.name, start=self.cfg.start, cursor=cursor)
        if cursor > self.events.last_id:
            log.warning("events.sink_cursor_ahead", sink=self.name, cursor=cursor,
                        last_id=self.events.last_id)
            cursor = self.events.last_id
            await store.save_cursor(self.name, cursor)
        return cursor

    async def run(self) -> None:
        """Deliver until cancelled (or the log closes). A failing store (the database
        away) is retried like a failing receiver: a sink never takes the daemon down."""
        await self.events.open()
        try:
            while True:
                try:
                    await self._deliver_all()
                except Exception as exc:  # noqa: BLE001 - logged and retried
                    self.failures += 1
                    self.last_error = str(exc) or type(exc).__name__
                    delay = retry_delay(self.failures, self.cfg.backoff_initial,
                                        self.cfg.backoff_max, self.roll())
                    log.warning("events.sink_error", sink=self.name, error=self.last_error,
                                retry_in=round(delay, 3))
                    if self._stopping.is_set():
                        return
                    await asyncio.sleep(delay)
                else:
                    return
        finally:
            await self.sink.close()

    async def _deliver_all(self) -> None:
        self.cursor = await self._start_cursor()
        log.info("events.sink_started", sink=self.name, target=self.sink.shown,
                 cursor=self.cursor, last_id=self.events.last_id)
        while not self._stopping.is_set():
            batch = await self._next_batch()
            if not batch:
                if not await self._wait_beyond_cursor():
                    return  # the log closed, or stop() was called
                continue
            await self._deliver(batch)

    async def _wait_beyond_cursor(self) -> bool:
        """Wait for an event past the cursor; False when the log closed or we stop."""
        beyond = asyncio.ensure_future(self.events.wait_beyond(self.cursor))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({beyond, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            beyond.cancel()
            stopping.cancel()
        return not self._stopping.is_set() and self.events.last_id > self.cursor

    async def _next_batch(self) -> list[Event]:
        last = self.events.last_id
        if last <= self.cursor:
            return []
        req = PageRequest(EventFilter(), after_id=self.cursor, limit=self.cfg.batch_size)
        batch = await self.events.store.page(req, last)
        # Ids have no holes except where retention pruned the oldest: a batch that does
        # not start right after the cursor means those events are gone.
        if batch and batch[0].id > self.cursor + 1:
            log.warning("events.sink_gap", sink=self.name, missed=batch[0].id - 1 - self.cursor,
                        reason="pruned by retention before this sink delivered them")
        return batch

    async def _deliver(self, batch: list[Event]) -> None:
        done = 0
        while done < len(batch) and not (done and self._stopping.is_set()):
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.cfg.timeout + SAFETY_MARGIN):
                    n = await self.sink.deliver(batch[done:])
            except (BackendAIError, TimeoutError) as exc:
                n, error = 0, str(exc) or "timed out"
            else:
                error = ""
            if n > 0:
                done += n
                self.cursor = batch[done - 1].id
                await self.events.store.save_cursor(self.name, self.cursor)
                self.delivered += n
                if self.failures:
                    log.info("events.sink_recovered", sink=self.name, after=self.failures,
                             cursor=self.cursor)
                self.failures, self.last_error = 0, ""
                continue
            self.failures += 1
            self.last_error = error or "nothing delivered"
            delay = retry_delay(self.failures, self.cfg.backoff_initial, self.cfg.backoff_max,
                                self.roll())
            log.warning("events.sink_failed", sink=self.name, error=self.last_error,
                        failures=self.failures, retry_in=round(delay, 3),
                        behind=self.events.last_id - self.cursor,
                        took=round(time.monotonic() - started, 3))
            if self._stopping.is_set():
                return  # no retry while stopping: the stored cursor resumes it
            await asyncio.sleep(delay)
