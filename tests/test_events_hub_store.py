"""The hub's event history behind its store, on both backends (SQLite, a real
PostgreSQL): the EventStore contract (ids, pages and filters with LIKE's own wildcards
taken literally, pruning, cursors, the scan budget), a rollout's notes written into the
history in the rollout's own transaction (and nothing of a write the lease refuses),
registrations with theirs, and on PostgreSQL several hubs appending at once (ids in
commit order, no holes a reader could see filled later) and one hub's watcher woken by
another hub's write."""

from __future__ import annotations

import asyncio
import time

import pytest

from backendai.errors import DeadlineExceeded, LeaseLost
from backendai.events.log import EventLog, Retention
from backendai.events.model import EventFilter, check_filter, check_page, make_event
from hub.config import HostEntry
from hub.store import Fence
from tests.fixtures.pg import StoreSpec
from tests.test_hub_store import lead, make


@pytest.fixture
async def store(store_spec):
    s = await store_spec.open()
    yield s
    await s.close()


def ev(kind: str = "host.reachability", subject: str = "host/a", at: float | None = None):
    return make_event(kind, subject, "m", {"k": "v"}, at=time.time() if at is None else at)


async def test_the_event_store_contract(store):
    h = store.history
    assert (await h.bounds()).last_id == 0
    last = await h.append([ev(subject="host/agent_1"), ev(subject="host/agent%1"),
                           ev("audit.rollout.start", "rollout/r1"), ev(at=100.0)])
    assert last == 4 and (await h.bounds()).oldest_id == 1

    async def ids(kind="", subject="", **kw):
        req = check_page(check_filter(kind, subject, kw.pop("since", 0), kw.pop("until", 0)),
                         **kw)
        return [e.id for e in await h.page(req, 4)]

    assert await ids() == [1, 2, 3, 4]
    assert await ids(newest_first=True, limit=2) == [4, 3]
    assert await ids(kind="audit.") == [3]
    assert await ids(kind="audit*") == [3]
    assert await ids(subject="host/agent_1") == [1]  # "_" is no wildcard here
    assert await ids(subject="host/agent%1") == [2]  # nor is "%"
    assert await ids(subject="host/agent?1") == [1, 2]
    assert await ids(subject="host/*", since=1000) == [1, 2]
    assert await ids(until=150) == [4]
    page = await h.page(check_page(EventFilter(), after_id=1, limit=1), 4)
    assert page[0].fields == {"k": "v"} and page[0].kind == "host.reachability"
    assert await h.cursor("hook") is None
    await h.save_cursor("hook", 3)
    await h.save_cursor("hook", 4)
    assert await h.cursor("hook") == 4
    assert await h.prune(keep=2, before_time=0) == 2
    assert await ids() == [3, 4]
    assert await h.prune(keep=100, before_time=200) == 1  # id 4 is from t=100
    assert await ids() == [3]
    assert (await h.append([ev()])) == 5  # never reused


async def test_a_rollouts_notes_go_into_the_history_with_it(store):
    log = EventLog(store.history, retention=Retention(10_000, 0))
    store.attach_events(log)
    await log.open()
    fence = await lead(store)
    r, notes = make("r1")
    await store.save(r, r.hosts.values(), notes, fence=fence)
    assert log.last_id == len(notes)  # told by the store, no flush needed
    page = await log.page(check_page(check_filter("rollout.")))
    assert [e.fields["index"] for e in page.events] == [str(n.index) for n in notes]
    assert page.events[0].kind == "rollout.created"
    assert page.events[0].subject == "rollout/r1"
    assert all(e.fields["rollout"] == "r1" for e in page.events)
    # a write the lease refuses keeps nothing: not the rollout, not its history
    with pytest.raises(LeaseLost):
        await store.save(r, [], notes, fence=Fence("hub-a", fence.epoch + 7))
    assert (await store.history.bounds()).last_id == len(notes)
    # a registration and its event, one transaction
    entry = HostEntry("n1", "10.0.0.1:3082", source="registered")
    await store.save_host(entry, 1.0, [ev("host.registered", "host/n1")])
    assert (await log.page(check_page(check_filter("host.registered")))).events[0].subject \
        == "host/n1"
    await log.close()


async def test_the_scan_budget_holds(store, monkeypatch):
    from backendai.events import sqlite_store
    from hub import events_pg

    await store.history.append([ev() for _ in range(3000)])
    monkeypatch.setattr(sqlite_store, "QUERY_BUDGET", -1.0)
    monkeypatch.setattr(events_pg, "QUERY_BUDGET", 0.001)
    if store.backend == "postgresql":  # a query that takes longer than 1 ms for sure
        original = events_pg.page_query

        def slow(req, last):
            sql, params = original(req, last)
            return sql.replace("WHERE", "WHERE pg_sleep(0.01) IS NOT NULL AND", 1), params

        monkeypatch.setattr(events_pg, "page_query", slow)
    with pytest.raises(DeadlineExceeded, match="narrow it"):
        await store.history.page(check_page(check_filter(subject="*zz*"), limit=5), 3000)


@pytest.fixture
async def two_hubs(pg_database):
    """Two hubs' stores on one PostgreSQL database (SQLite is one hub per file)."""
    spec = StoreSpec("postgresql", dsn=pg_database.dsn,
                     password_file=str(pg_database.password_file))
    a, b = await spec.open(), await spec.open()
    yield a, b
    await a.close()
    await b.close()


async def test_hubs_appending_at_once_get_ids_in_commit_order(two_hubs):
    a, b = two_hubs
    seen: list[int] = []
    stop = asyncio.Event()

    async def reader() -> None:
        # Every look at the history sees a prefix 1..N without holes: an id that was
        # not visible yet is never found below one that was.
        while not stop.is_set():
            last = (await a.history.bounds()).last_id
            got = [e.id for e in await a.history.page(check_page(EventFilter(), limit=1000),
                                                      last)]
            assert got == list(range(1, len(got) + 1))
            seen.append(len(got))
            await asyncio.sleep(0)

    async def writer(store, n: int) -> None:
        for _ in range(n):
            await store.history.append([ev(), ev()])

    watching = asyncio.create_task(reader())
    await asyncio.gather(*(writer(s, 25) for s in (a, b, a, b)))
    stop.set()
    await watching
    assert (await a.history.bounds()).last_id == 200
    assert seen


async def test_a_watcher_on_one_hub_sees_another_hubs_events(two_hubs):
    a, b = two_hubs
    log_a = EventLog(a.history)
    log_b = EventLog(b.history)
    await log_a.open()
    await log_b.open()
    listening = asyncio.create_task(b.run())  # LISTEN: pokes b.event_changes

    async def follow() -> None:  # as hub/daemon.py's _follow_history does
        while True:
            generation = b.event_changes.generation
            await b.event_changes.wait_past(generation, 5.0)
            await log_b.refresh()

    following = asyncio.create_task(follow())
    got: list[str] = []

    async def watch() -> None:
        async for e in log_b.watch(EventFilter(), from_now=True):
            got.append(e.subject)
            if len(got) == 2:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)  # LISTEN is in place
    log_a.emit("host.reachability", "host/x")
    log_a.emit("host.reachability", "host/y")
    await log_a.flush()
    async with asyncio.timeout(4):  # well under follow()'s 5 s poll: the NOTIFY woke it
        await watcher
    assert got == ["host/x", "host/y"]
    for task in (listening, following):
        task.cancel()
    await log_a.close()
    await log_b.close()
