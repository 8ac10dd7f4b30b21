"""The event log on a real SQLite file (the manager's StateStore): ids, batching, state
writes that commit their events, pages and filters, resumable watches, retention,
sink cursors, the update journal's history and the audit decorator."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time

import pytest

from backendai.auth import Identity, Role
from backendai.errors import DeadlineExceeded, InvalidArgument, NotFound
from backendai.events import sqlite_store
from backendai.events.audit import Caller, acting, audited, calling
from backendai.events.log import EventLog, Retention
from backendai.events.model import EventFilter, PageRequest, check_filter, check_page
from backendai.update_terms import OpKind, Outcome, Step, StepStatus
from manager.statestore import ServiceRecord, StateStore
from manager.updates.journal import EventRecord, OpRecord, UpdateJournal


@pytest.fixture
async def world(tmp_path):
    store = StateStore(tmp_path / "manager.db")
    log = EventLog(store.event_store(), retention=Retention(1000, 30), source="h/m")
    store.attach_events(log)
    await log.open()
    task = asyncio.create_task(log.run())
    yield store, log
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await log.close()
    store.close()


def rows(store: StateStore) -> list[tuple]:
    return store.db.execute("SELECT id, kind, subject FROM events ORDER BY id").fetchall()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_emitted_events_are_committed_in_one_batch_with_increasing_ids(world):
    store, log = world
    for i in range(5):
        log.emit("service.state", f"service/s{i}", "m", {"i": i})
    assert rows(store) == []  # queued: committed at the end of this loop turn
    await until(lambda: log.last_id == 5)
    assert [r[0] for r in rows(store)] == [1, 2, 3, 4, 5]
    assert [r[2] for r in rows(store)] == [f"service/s{i}" for i in range(5)]


async def test_a_desired_state_write_commits_the_queued_events_with_it(world):
    store, log = world
    log.emit("service.state", "service/web", "STOPPED -> STARTING")
    store.save_service(ServiceRecord("web", desired="running"))
    # No loop turn has passed: the events came with the state write.
    kinds = [r[1] for r in rows(store)]
    assert kinds == ["service.state", "service.desired"]
    assert log.last_id == 2
    # a write that changes no desired state (a pid after a spawn: the crash-repair path)
    # stays one plain statement; what is queued is committed at the end of the turn
    log.emit("service.state", "service/web", "STARTING -> RUNNING")
    store.save_service(ServiceRecord("web", desired="running", pid=5))
    assert len(rows(store)) == 2
    await until(lambda: log.last_id == 3)
    assert store.load_service("web") == ServiceRecord("web", desired="running", pid=5)


async def test_a_failed_state_write_keeps_its_events_queued(world, monkeypatch):
    store, log = world
    log.emit("service.state", "service/web", "x")
    original = store._upsert

    def broken(rec):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_upsert", broken)
    with pytest.raises(sqlite3.OperationalError):
        store.save_service(ServiceRecord("web", desired="running"))
    assert rows(store) == []
    monkeypatch.setattr(store, "_upsert", original)
    await until(lambda: log.last_id == 1)
    assert [r[1] for r in rows(store)] == ["service.state"]


async def test_desired_state_events_name_who_asked(world):
    store, log = world

    class Control:
        events = log

        @audited("stop", lambda self, name: f"service/{name}")
        async def stop(self, name: str) -> str:
            assert acting() is not None
            store.save_service(ServiceRecord(name, desired="stopped"))
            return "done"

    who = Caller(Identity("alice", Role.ADMIN, "ipv4:10.0.0.9:5555", "grpc", "CN=ops"))
    with calling(who):
        assert await Control().stop("web") == "done"
    await until(lambda: log.last_id == 2)
    page = await log.page(PageRequest())
    desired, audit = page.events
    assert desired.kind == "service.desired" and desired.actor == "alice"
    assert "asked by alice over grpc" in desired.message
    assert (audit.kind, audit.actor, audit.transport, audit.peer, audit.result) == (
        "audit.stop", "alice", "grpc", "10.0.0.9:5555", "ok")
    assert audit.fields["cert_subject"] == "CN=ops"
    assert audit.message == "alice asked to stop service/web over grpc: ok"


async def test_audit_records_the_error_the_caller_got(world):
    _, log = world

    class Control:
        events = log

        @audited("start", lambda self, name: f"service/{name}",
                 request=lambda self, name: {"asked": name})
        async def start(self, name: str) -> None:
            raise NotFound(f"no service named {name!r}")

    with calling(Caller(Identity("anonymous", Role.ADMIN, "127.0.0.1:1", "http"))), \
            pytest.raises(NotFound):
        await Control().start("nope")
    await until(lambda: log.last_id == 1)
    (ev,) = (await log.page(PageRequest())).events
    assert ev.result == "no service named 'nope'" and ev.fields == {"asked": "nope"}
    assert ev.actor == "anonymous" and ev.transport == "http"


async def test_pages_filters_and_both_directions(world):
    _, log = world
    for i in range(30):
        log.emit("audit.stop" if i % 3 == 0 else "service.state",
                 f"service/{'web' if i % 2 else 'db'}-{i % 5}", f"e{i}")
    await until(lambda: log.last_id == 30)

    async def ids(**kw) -> list[int]:
        flt = check_filter(kw.pop("kind", ""), kw.pop("subject", ""))
        return [e.id for e in (await log.page(check_page(flt, **kw))).events]

    assert await ids(limit=5) == [1, 2, 3, 4, 5]
    assert await ids(after_id=5, limit=3) == [6, 7, 8]
    assert await ids(newest_first=True, limit=3) == [30, 29, 28]
    assert await ids(newest_first=True, before_id=28, limit=2) == [27, 26]
    assert await ids(kind="audit.") == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    assert await ids(kind="audit*", after_id=20) == [22, 25, 28]
    assert await ids(kind="service.state", limit=3) == [2, 3, 5]
    assert await ids(subject="service/web-*", limit=4) == [2, 4, 6, 8]
    assert await ids(subject="service/db-?", kind="audit.stop") == [1, 7, 13, 19, 25]
    assert await ids(subject="service/web-1") == [2, 12, 22]
    page = await log.page(check_page(check_filter(), limit=10))
    assert (page.next_after_id, page.last_id, page.oldest_id) == (10, 30, 1)
    with pytest.raises(InvalidArgument, match="after_id 31 is beyond"):
        await log.page(check_page(check_filter(), after_id=31))


async def test_time_range(world):
    _store, log = world
    log.committed(await log.store.append([log_event(at) for at in (100.0, 200.0, 300.0)]), 3)
    page = await log.page(check_page(check_filter(since=150, until=300)))
    assert [e.at for e in page.events] == [200.0, 300.0]


def log_event(at: float):
    from backendai.events.model import make_event

    return make_event("service.state", "service/x", at=at)


async def test_watch_resumes_after_an_id_and_follows_commits(world):
    _, log = world
    for i in range(3):
        log.emit("service.state", "service/web", f"e{i}")
    await until(lambda: log.last_id == 3)
    seen: list[int] = []

    async def follow(after: int, flt: EventFilter) -> None:
        async for ev in log.watch(flt, after_id=after):
            seen.append(ev.id)

    task = asyncio.create_task(follow(1, EventFilter()))
    await until(lambda: seen == [2, 3])
    log.emit("service.state", "service/web", "e3")
    log.emit("audit.stop", "service/web", "e4")
    await until(lambda: seen == [2, 3, 4, 5])
    task.cancel()
    # a filtered watch from now on sees only what matches and is new
    seen.clear()
    task = asyncio.create_task(follow(0, check_filter("audit.")))
    await until(lambda: seen == [5])
    now_seen: list[int] = []

    async def from_now() -> None:
        async for ev in log.watch(EventFilter(), from_now=True):
            now_seen.append(ev.id)

    live = asyncio.create_task(from_now())
    await asyncio.sleep(0.05)
    log.emit("audit.start", "service/web")
    await until(lambda: seen == [5, 6] and now_seen == [6])
    task.cancel()
    live.cancel()
    with pytest.raises(InvalidArgument, match="beyond the newest"):
        async for _ in log.watch(EventFilter(), after_id=99):
            pass


async def test_a_slow_watcher_reads_pages_not_a_growing_queue(world):
    _, log = world
    for i in range(1000):  # five pages of the watch, within retention
        log.emit("service.state", "service/web", f"e{i}")
    await until(lambda: log.last_id == 1000)
    async with asyncio.timeout(10):
        got = [ev.id async for ev in _take(log.watch(EventFilter()), 1000)]
    assert got == list(range(1, 1001))


async def _take(agen, n):
    count = 0
    async for item in agen:
        yield item
        count += 1
        if count == n:
            return


async def test_retention_by_count_and_age(tmp_path):
    store = StateStore(tmp_path / "m.db")
    log = EventLog(store.event_store(), retention=Retention(100, 1.0))
    store.attach_events(log)
    await log.open()
    old = time.time() - 3 * 86400
    store.event_store().append_now([log_event(old) for _ in range(50)])
    log.committed(50, 50)
    for i in range(300):
        log.emit("service.state", "service/x", str(i))
    await log.flush()
    removed = await log.prune()
    assert removed == 250
    count, low, high = store.db.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM events").fetchone()
    assert (count, low, high) == (100, 251, 350)
    assert log.oldest_id == 251
    # ids are never reused, even when everything is pruned
    log.retention = Retention(100, 0.0)
    store.db.execute("UPDATE events SET at = 1")
    log.retention = Retention(100, 1.0)
    await log.prune()
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    log.emit("service.state", "service/x")
    await log.flush()
    assert store.db.execute("SELECT id FROM events").fetchone()[0] == 351
    await log.close()
    store.close()


async def test_the_history_runs_past_retention_by_the_slack_at_most(world):
    store, log = world  # retention 1000, slack 50
    for _ in range(40):
        for _ in range(100):
            log.emit("service.state", "service/x")
        await log.flush()
        await asyncio.sleep(0)
    await until(lambda: store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] <= 1050)
    assert log.last_id == 4000


async def test_sink_cursors_are_durable(tmp_path):
    store = StateStore(tmp_path / "m.db")
    events = store.event_store()
    assert await events.cursor("web") is None
    await events.save_cursor("web", 42)
    store.close()
    store = StateStore(tmp_path / "m.db")
    assert await store.event_store().cursor("web") == 42
    store.close()


async def test_a_query_that_scans_too_long_is_stopped(world, monkeypatch):
    _, log = world
    log.retention = Retention(100_000, 0)  # all 3000 stay: a scan long enough to check
    for _ in range(3000):
        log.emit("service.state", "service/x")
    await log.flush()
    monkeypatch.setattr(sqlite_store, "QUERY_BUDGET", -1.0)  # past at the first check
    with pytest.raises(DeadlineExceeded, match="narrow it"):
        await log.page(check_page(check_filter(subject="*nothing*"), limit=10))


async def test_the_update_journal_writes_its_steps_in_the_same_transaction(world):
    store, log = world
    journal = UpdateJournal(store)
    op = OpRecord("a" * 32, "web", OpKind.UPDATE, "1.0", "2.0", created=time.time())
    journal.create_op(op, EventRecord(op.id, 0, Step.VALIDATE, StepStatus.OK, "update 1.0 -> 2.0"))
    journal.append(op.id, Step.DOWNLOAD, StepStatus.STARTED)
    journal.append(op.id, Step.DONE, StepStatus.OK, "on 2.0", final=True,
                   outcome=Outcome.SUCCEEDED)
    got = rows(store)  # committed with the journal rows, no loop turn needed
    assert [r[1] for r in got] == ["update.step", "update.step", "update.outcome"]
    page = await log.page(check_page(check_filter("update.")))
    last = page.events[-1]
    assert last.fields["operation"] == op.id and last.fields["outcome"] == "succeeded"
    assert last.message.startswith("update 1.0 -> 2.0: succeeded")
    assert page.events[1].fields["step"] == "download"


@pytest.mark.parametrize("slow", [False, True])
async def test_a_store_that_always_fails_keeps_the_queue_bounded_and_counts_the_dropped(
        tmp_path, monkeypatch, slow):
    """A database that cannot be written (a full disk; `slow`: a failure that takes a
    while, as a remote database's does, with events still arriving meanwhile): emit()
    keeps queueing without blocking, the queue never holds more than MAX_PENDING events,
    the oldest are dropped and counted (`events.dropped` in the log, `dropped` on the
    log), the flusher keeps retrying, and once the store takes writes again the newest
    MAX_PENDING arrive in order."""
    from structlog.testing import capture_logs

    from backendai.events import log as log_module

    monkeypatch.setattr(log_module, "RETRY_INITIAL", 0.01)
    monkeypatch.setattr(log_module, "RETRY_MAX", 0.02)
    store = StateStore(tmp_path / "manager.db")
    real = store.event_store()

    class DiskFull:
        """The real store, whose writes fail while `broken`."""

        broken = True
        attempts = 0

        def __getattr__(self, name):
            return getattr(real, name)

        async def append(self, events):
            self.attempts += 1
            if self.broken:
                if slow:
                    await asyncio.sleep(0.005)  # events keep coming meanwhile
                raise OSError(28, "No space left on device")
            return await real.append(events)

    failing = DiskFull()
    log = EventLog(failing, retention=Retention(100_000, 0), source="h/m")  # type: ignore[arg-type]
    await log.open()
    task = asyncio.create_task(log.run())
    limit = log_module.MAX_PENDING
    total = limit + 15_000
    worst = 0
    try:
        with capture_logs() as logs:
            for i in range(total):
                log.emit("service.state", "service/flap", f"crash {i}", {"i": i})
                if i % 500 == 0:
                    worst = max(worst, len(log._pending))
                    await asyncio.sleep(0)  # the flusher runs (and fails) in between
            worst = max(worst, len(log._pending))
            await until(lambda: failing.attempts >= 5)
            # between two tries everything is queued again (in a try, the write has it)
            await until(lambda: len(log._pending) == limit)
        assert worst <= limit
        assert log.dropped == total - limit and log.last_id == 0
        dropped = [e for e in logs if e["event"] == "events.dropped"]
        assert [e["dropped"] for e in dropped] == [1, 10, 100, *range(1000, 15_001, 1000)]
        assert dropped[0]["log_level"] == "warning"
        assert any(e["event"] == "events.write_failed" and "No space left" in e["error"]
                   for e in logs)
        # the disk has room again: what the queue kept is written, oldest first
        failing.broken = False
        await until(lambda: log.last_id == limit, timeout=20)
        assert log._pending == collections.deque() and log.dropped == total - limit
        got = store.db.execute("SELECT id, message FROM events ORDER BY id").fetchall()
        assert [r[0] for r in got] == list(range(1, limit + 1))
        assert got[0][1] == f"crash {total - limit}" and got[-1][1] == f"crash {total - 1}"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await log.close()
        store.close()
