"""The PostgreSQL backend of the hub's store (hub/store.py), on psycopg 3 (async) and
its connection pool. Several hubs share one database; one leads (hub/leadership.py).

- Every rollout write checks, in its own transaction, that the writer's lease (holder
  and epoch) is current and unexpired, taking the lease row FOR SHARE: a takeover (an UPDATE of that
  row) waits for the write to commit, and the new leader reads the rollout only after
  its takeover committed. A deposed leader's write raises LeaseLost and keeps nothing.
- The lease's clock is the database's now(); a hub's own clock is never compared.
- Writes NOTIFY `backendai_hub` ("rollout:ID", "hosts", "lease", "events") in their
  transaction;
  one LISTEN connection per hub pokes the matching ChangeFeed. Readers always read by
  index or sequence, so a notification lost with a dropped connection loses nothing.
- Connection failures and timeouts become StoreUnavailable naming the database as
  "host:port/dbname" (the DSN holds no password; the password comes from a file).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backendai.backoff import reconnect_delay
from backendai.errors import LeaseLost, StoreUnavailable
from backendai.events.model import Event
from hub.config import HostEntry
from hub.events_pg import PgEventStore, insert_events, insert_rows
from hub.migrations import pending
from hub.migrations.postgresql import EVENTS, HUB, LOCK_KEY, META
from hub.rollout_history import note_rows
from hub.rollout_model import HostRun, Note, Rollout
from hub.store import (
    EVENT_PAGE,
    ChangeFeed,
    Fence,
    Lease,
    decode_entry,
    decode_note,
    decode_rollout,
    encode_core,
    encode_entry,
    encode_host,
    encode_note,
)
from hub.store_config import StoreConfig, describe_dsn

if TYPE_CHECKING:
    from backendai.events.log import EventLog

log = structlog.get_logger(__name__)

CHANNEL = "backendai_hub"
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
LISTEN_CHECK = 10.0  # seconds without a notification before the listener checks its link
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3}
SELECT_LEASE = ("SELECT holder, address, epoch, extract(epoch FROM expires_at)::float8, "
                "extract(epoch FROM now())::float8 FROM hub_lease WHERE id = 1")
FENCE = ("SELECT 1 FROM hub_lease WHERE id = 1 AND holder = %s AND epoch = %s "
         "AND expires_at > now() FOR SHARE")
# the database is away, or (read-only) a standby answered: the DSN should name the
# primary, or list every host with target_session_attrs=read-write (docs/DEPLOY.md)
STORE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError,
                psycopg.errors.ReadOnlySqlTransaction)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class PostgresStore:
    backend = "postgresql"

    def __init__(self, cfg: StoreConfig, pool: AsyncConnectionPool, where: str,
                 kwargs: dict[str, Any]) -> None:
        self.cfg = cfg
        self.pool = pool
        self.where = where
        self.timeout = cfg.timeout
        self._kwargs = kwargs
        self.rollout_changes = ChangeFeed()
        self.lease_changes = ChangeFeed()
        self.host_changes = ChangeFeed()
        self.event_changes = ChangeFeed()
        self.history = PgEventStore(self, CHANNEL)
        self._events: EventLog | None = None

    def attach_events(self, events: EventLog) -> None:
        """The event log told of the history this store writes with its own writes."""
        self._events = events

    def _committed(self, last: int, count: int) -> None:
        if self._events is not None and count:
            self._events.committed(last, count)

    def connection(self, what: str) -> contextlib.AbstractAsyncContextManager[
            psycopg.AsyncConnection[Any]]:
        """A pooled connection for one operation (see _conn), for the event store."""
        return self._conn(what)

    # ---------------------------------------------------------------- opening

    @classmethod
    async def open(cls, cfg: StoreConfig, *, migrate: bool, attempts: int = 0,
                   transaction_limit: float | None = None) -> PostgresStore:
        """Connect (retrying with backoff while the database cannot be reached; forever
        when `attempts` is 0), check and migrate the schema, then open the pool.

        `transaction_limit` (the lease's TTL): no statement of the hub's sessions runs
        longer (`statement_timeout`), and no transaction stays idle longer
        (`idle_in_transaction_session_timeout`). A hub paused mid-write (SIGSTOP, a
        frozen VM, a stalled event loop) holds the lease row FOR SHARE and the event
        counter's row lock, and with its pipeline half sent the database sees the
        statement as still running; without the limit, the hub taking over waited for
        those locks as long as the pause lasted (seen in tests/test_hub_ha.py under
        load: no leader for 30 s). A write that long could not have kept its lease
        either: it is rolled back, and its hub steps down."""
        where = describe_dsn(cfg.dsn)
        kwargs = {**cfg.connect_kwargs(), **KEEPALIVES, "application_name": "ai-hub"}
        conn = await _connect_retrying(cfg, where, kwargs, attempts)
        try:
            async with asyncio.timeout(max(cfg.timeout, 30.0)):
                await _migrate(conn, migrate, where)
        except TimeoutError:
            raise StoreUnavailable(f"database {where}: schema check timed out") from None
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"database {where}: schema check failed: "
                                   f"{_reason(exc)}") from None
        finally:
            await conn.close()
        limit_ms = max(1, round(transaction_limit * 1000)) if transaction_limit else 0

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            if limit_ms:
                await conn.execute(f"SET idle_in_transaction_session_timeout = {limit_ms}")
                await conn.execute(f"SET statement_timeout = {limit_ms}")
                await conn.commit()

        pool = AsyncConnectionPool(cfg.dsn, kwargs=kwargs, min_size=2, max_size=cfg.pool_size,
                                   configure=configure,
                                   open=False, timeout=cfg.timeout, name="hub",
                                   check=AsyncConnectionPool.check_connection,
                                   reconnect_timeout=cfg.timeout * 6)
        try:
            await pool.open(wait=True, timeout=cfg.timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(f"database {where}: cannot open connections: "
                                   f"{_reason(exc)}") from None
        log.info("store.opened", backend="postgresql", database=where,
                 schema=HUB.latest, pool_size=cfg.pool_size)
        return cls(cfg, pool, where, kwargs)

    async def close(self) -> None:
        await self.pool.close(timeout=5.0)

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for one operation, bounded by the store's timeout; a lost
        or silent database becomes StoreUnavailable."""
        try:
            async with asyncio.timeout(self.timeout), \
                    self.pool.connection(timeout=self.timeout) as conn:
                yield conn
        except psycopg.errors.LockNotAvailable:
            raise  # a lock_timeout its caller set: the caller decides
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"database {self.where}: {what} failed: "
                                   f"{_reason(exc)}") from None
        except TimeoutError:
            raise StoreUnavailable(f"database {self.where}: {what} did not finish within "
                                   f"{self.timeout:g}s") from None

    # ---------------------------------------------------------------- notifications

    async def run(self) -> None:
        """LISTEN for the other hubs' writes until cancelled, reconnecting with backoff."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await psycopg.AsyncConnection.connect(
                        self.cfg.dsn, autocommit=True, **self._kwargs)
                async with conn:
                    async with asyncio.timeout(self.timeout):
                        await conn.execute(f"LISTEN {CHANNEL}")
                    failures = 0
                    self._poke_all()  # anything may have changed while we were not listening
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK):
                            self._dispatch(note.payload)
                        async with asyncio.timeout(self.timeout):
                            await conn.execute("SELECT 1")  # the link is still there
            except (*STORE_ERRORS, TimeoutError) as exc:
                failures += 1
                delay = reconnect_delay(failures, base=BACKOFF_BASE, cap=BACKOFF_CAP,
                                        roll=random.random)
                log.warning("store.listen_lost", database=self.where, reason=_reason(exc),
                            retry_in=round(delay, 2))
                self._poke_all()
                await asyncio.sleep(delay)

    def _dispatch(self, payload: str) -> None:
        if payload.startswith("rollout:"):
            self.rollout_changes.poke()
        elif payload == "hosts":
            self.host_changes.poke()
        elif payload == "lease":
            self.lease_changes.poke()
        elif payload == "events":
            self.event_changes.poke()

    def _poke_all(self) -> None:
        for feed in (self.rollout_changes, self.host_changes, self.lease_changes,
                     self.event_changes):
            feed.poke()

    # ---------------------------------------------------------------- rollouts

    @staticmethod
    async def _fence(conn: psycopg.AsyncConnection[Any], fence: Fence) -> None:
        cur = await conn.execute(FENCE, (fence.holder, fence.epoch))
        if await cur.fetchone() is None:
            raise LeaseLost(f"lease epoch {fence.epoch} of {fence.holder} is no longer "
                            "current or has expired")

    async def save(self, r: Rollout, hosts: Iterable[HostRun], notes: Iterable[Note], *,
                   fence: Fence) -> None:
        """One transaction: the lease check, the rollout core, the changed host rows, the
        new events (and their lines in the event history), the notification; sent as one
        pipeline (one round trip to the database instead of one per statement, plus one
        for the event history's sequence). The writes are sent before the lease check's
        answer is read: when the lease is not ours, the transaction is rolled back and
        nothing of it is kept."""
        epoch = fence.epoch
        host_list = list(hosts)
        note_list = list(notes)
        history = note_rows(r, note_list)
        last = 0
        async with self._conn("saving a rollout") as conn:
            try:
                async with conn.pipeline() as pipeline, conn.transaction():
                    held = await conn.execute(FENCE, (fence.holder, fence.epoch))
                    await conn.execute(
                        "INSERT INTO rollouts (id, created, state, active, core, epoch) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                        "state = excluded.state, active = excluded.active, "
                        "core = excluded.core, epoch = excluded.epoch",
                        (r.id, r.created_at, r.state.value, r.active, encode_core(r), epoch))
                    # each table's rows as one statement over arrays (one parameter per
                    # column, not per row: adapting thousands of rows one by one cost more
                    # than the write)
                    if host_list:
                        await conn.execute(
                            "INSERT INTO rollout_hosts (rollout_id, name, row) "
                            "SELECT %s, * FROM unnest(%b::text[], %b::text[]) "
                            "ON CONFLICT (rollout_id, name) DO UPDATE SET row = excluded.row",
                            (r.id, [h.name for h in host_list],
                             [encode_host(h) for h in host_list]))
                    if note_list:
                        await conn.execute(
                            "INSERT INTO rollout_events (rollout_id, idx, event, epoch) "
                            "SELECT %s, *, %s FROM unnest(%b::bigint[], %b::text[])",
                            (r.id, epoch, [n.index for n in note_list],
                             [encode_note(n) for n in note_list]))
                    if history:
                        last = await insert_rows(conn, history, CHANNEL)
                    await conn.execute("SELECT pg_notify(%s, %s)",
                                       (CHANNEL, "rollout:" + r.id))
                    await pipeline.sync()
                    if await held.fetchone() is None:
                        raise LeaseLost(f"lease epoch {fence.epoch} of {fence.holder} is no "
                                        "longer current or has expired")
            except psycopg.errors.IntegrityError:
                # a deposed leader's rows can collide with its successor's (the same
                # event index) before the lease check's answer is read: the lease
                # says what the refusal was
                async with conn.transaction():
                    await self._fence(conn, fence)
                raise
        self.rollout_changes.poke()
        self._committed(last, len(history))

    async def prune(self, keep: int, *, fence: Fence) -> int:
        async with self._conn("pruning rollouts") as conn, conn.transaction():
            await self._fence(conn, fence)
            cur = await conn.execute(
                "SELECT id FROM rollouts WHERE NOT active ORDER BY created DESC, seq DESC "
                "OFFSET %s", (keep,))
            old = [i for (i,) in await cur.fetchall()]
            if old:
                for table in ("rollout_events", "rollout_hosts"):
                    await conn.execute(f"DELETE FROM {table} WHERE rollout_id = ANY(%s)",  # noqa: S608 - fixed table names
                                       (old,))
                await conn.execute("DELETE FROM rollouts WHERE id = ANY(%s)", (old,))
        return len(old)

    async def load(self, rollout_id: str) -> Rollout | None:
        async with self._conn("loading a rollout") as conn, conn.transaction():
            # one snapshot for the core and its rows
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = await conn.execute("SELECT core FROM rollouts WHERE id = %s", (rollout_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute("SELECT row FROM rollout_hosts WHERE rollout_id = %s "
                                     "ORDER BY seq", (rollout_id,))
            hosts = [h for (h,) in await cur.fetchall()]
        return decode_rollout(row[0], hosts)

    async def ids(self, *, limit: int, active_only: bool = False) -> list[str]:
        sql = "SELECT id FROM rollouts"
        if active_only:
            sql += " WHERE active"
        sql += " ORDER BY created DESC, seq DESC LIMIT %s"
        async with self._conn("listing rollouts") as conn:
            cur = await conn.execute(sql, (limit,))
            return [i for (i,) in await cur.fetchall()]

    async def is_active(self, rollout_id: str) -> bool:
        async with self._conn("reading a rollout") as conn:
            cur = await conn.execute("SELECT active FROM rollouts WHERE id = %s", (rollout_id,))
            row = await cur.fetchone()
        return bool(row and row[0])

    async def events(self, rollout_id: str, from_index: int,
                     limit: int = EVENT_PAGE) -> list[Note]:
        async with self._conn("reading events") as conn:
            cur = await conn.execute(
                "SELECT event FROM rollout_events WHERE rollout_id = %s AND idx >= %s "
                "ORDER BY idx LIMIT %s", (rollout_id, from_index, limit))
            rows = await cur.fetchall()
        return [decode_note(e) for (e,) in rows]

    # ---------------------------------------------------------------- registered hosts

    async def save_host(self, entry: HostEntry, at: float,
                        history: Sequence[Event] = ()) -> None:
        last = 0
        async with self._conn("saving a host") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO registered_hosts (name, entry, registered, seq) "
                "VALUES (%s, %s, %s, nextval('registered_hosts_seq')) ON CONFLICT (name) DO "
                "UPDATE SET entry = excluded.entry, registered = excluded.registered, "
                "seq = excluded.seq", (entry.name, encode_entry(entry), at))
            if history:
                last = await insert_events(conn, history, CHANNEL)
            await conn.execute("SELECT pg_notify(%s, 'hosts')", (CHANNEL,))
        self.host_changes.poke()
        self._committed(last, len(history))

    async def registered_hosts(self) -> list[HostEntry]:
        async with self._conn("reading hosts") as conn:
            cur = await conn.execute("SELECT entry FROM registered_hosts ORDER BY name")
            rows = await cur.fetchall()
        return [decode_entry(e) for (e,) in rows]

    async def hosts_since(self, seq: int) -> tuple[list[HostEntry], int]:
        async with self._conn("reading hosts") as conn:
            cur = await conn.execute("SELECT entry, seq FROM registered_hosts WHERE seq > %s "
                                     "ORDER BY seq", (seq,))
            rows = await cur.fetchall()
        return [decode_entry(e) for e, _ in rows], max((s for _, s in rows), default=seq)

    # ---------------------------------------------------------------- the lease

    async def acquire_lease(self, hub_id: str, address: str, ttl: float, *,
                            only_if_expired: bool = False) -> tuple[Lease, bool]:
        """Take the lease when it is free, expired, or this hub's own (a restarted hub
        with the same id: state_dir's lock proves the old process is gone; not with
        `only_if_expired`, which a hub that found another process under its id asks);
        each taking raises the epoch. Otherwise the lease as it stands.

        The lease row is waited for at most half a TTL (or of the store's timeout): a
        hub paused in the middle of a write holds it FOR SHARE, and with its pipeline
        half sent no server timeout ends that (statement_timeout stops counting when a
        statement completes). Then
        every hub transaction open longer than a TTL (by the database's clock: none of
        ours may outlive the lease that fences it) is ended, and the caller retries."""
        try:
            return await self._take_lease(hub_id, address, ttl, only_if_expired)
        except psycopg.errors.LockNotAvailable:
            pass
        async with self._conn("ending stale hub transactions") as conn:
            cur = await conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'ai-hub' "
                "AND pid <> pg_backend_pid() AND state <> 'idle' "
                "AND xact_start < now() - make_interval(secs => %s)", (ttl,))
            ended = [pid for pid, done in await cur.fetchall() if done]
        log.warning("store.stale_transactions_ended", database=self.where, pids=ended,
                    reason="the lease row stayed locked past half a TTL")
        raise StoreUnavailable(f"database {self.where}: the lease row was locked; ended "
                               f"{len(ended)} hub transaction(s) open longer than the "
                               "lease's TTL")

    async def _take_lease(self, hub_id: str, address: str, ttl: float,
                          only_if_expired: bool) -> tuple[Lease, bool]:
        async with self._conn("taking the lease") as conn, conn.transaction():
            wait_ms = max(1, round(min(ttl, self.timeout) * 500))
            await conn.execute(f"SET LOCAL lock_timeout = {wait_ms}")
            cur = await conn.execute(
                "INSERT INTO hub_lease AS l (id, holder, address, epoch, expires_at, "
                "renewed_at) VALUES (1, %(me)s, %(address)s, 1, "
                "now() + make_interval(secs => %(ttl)s), now()) ON CONFLICT (id) DO UPDATE SET "
                "holder = excluded.holder, address = excluded.address, epoch = l.epoch + 1, "
                "expires_at = excluded.expires_at, renewed_at = excluded.renewed_at "
                "WHERE l.expires_at <= now() OR (l.holder = excluded.holder "
                "AND NOT %(only_if_expired)s) "
                "RETURNING holder, address, epoch, extract(epoch FROM expires_at)::float8, "
                "extract(epoch FROM now())::float8",
                {"me": hub_id, "address": address, "ttl": ttl,
                 "only_if_expired": only_if_expired})
            row = await cur.fetchone()
            if row is not None:
                return Lease(*row), True
            cur = await conn.execute(SELECT_LEASE)
            row = await cur.fetchone()
            assert row is not None  # the INSERT found the row  # noqa: S101 - invariant
            return Lease(*row), False

    async def renew_lease(self, hub_id: str, epoch: int, ttl: float) -> Lease | None:
        async with self._conn("renewing the lease") as conn:
            cur = await conn.execute(
                "UPDATE hub_lease SET expires_at = now() + make_interval(secs => %s), "
                "renewed_at = now() WHERE id = 1 AND holder = %s AND epoch = %s "
                "AND expires_at > now() RETURNING holder, address, epoch, "
                "extract(epoch FROM expires_at)::float8, extract(epoch FROM now())::float8",
                (ttl, hub_id, epoch))
            row = await cur.fetchone()
        return Lease(*row) if row is not None else None

    async def release_lease(self, hub_id: str, epoch: int) -> None:
        async with self._conn("releasing the lease") as conn, conn.transaction():
            await conn.execute("UPDATE hub_lease SET expires_at = now() WHERE id = 1 "
                               "AND holder = %s AND epoch = %s", (hub_id, epoch))
            await conn.execute("SELECT pg_notify(%s, 'lease')", (CHANNEL,))

    async def read_lease(self) -> Lease | None:
        async with self._conn("reading the lease") as conn:
            cur = await conn.execute(SELECT_LEASE)
            row = await cur.fetchone()
        return Lease(*row) if row is not None else None


async def _connect_retrying(cfg: StoreConfig, where: str, kwargs: dict[str, Any],
                            attempts: int) -> psycopg.AsyncConnection[Any]:
    """The first connection: while the database cannot be reached, log why (naming
    "host:port/dbname", never the password) and retry with backoff and full jitter."""
    failures = 0
    while True:
        try:
            async with asyncio.timeout(cfg.timeout + 1.0):
                return await psycopg.AsyncConnection.connect(cfg.dsn, autocommit=True,
                                                             **kwargs)
        except (*STORE_ERRORS, TimeoutError) as exc:
            failures += 1
            reason = _reason(exc)
            if attempts and failures >= attempts:
                raise StoreUnavailable(f"database {where} unreachable: {reason}") from None
            delay = reconnect_delay(failures, base=BACKOFF_BASE, cap=BACKOFF_CAP,
                                    roll=random.random)
            log.warning("store.unreachable", database=where, attempt=failures,
                        retry_in=round(delay, 2), reason=reason)
            await asyncio.sleep(delay)


async def _migrate(conn: psycopg.AsyncConnection[Any], allow: bool, where: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        await conn.execute(META)
        for component in (HUB, EVENTS):
            cur = await conn.execute("SELECT version FROM schema_versions WHERE component = %s",
                                     (component.name,))
            row = await cur.fetchone()
            todo = pending(component, row[0] if row else 0, migrate=allow, where=where)
            for m in todo:
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version, "
                    "applied_at = now()", (component.name, m.version))
                log.info("store.migrated", database=where, component=component.name,
                         version=m.version, migration=m.name)
