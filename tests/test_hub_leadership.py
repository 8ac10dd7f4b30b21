"""Leadership on a real PostgreSQL, in process: the lease goes by the database's clock,
whatever the hubs' clocks say (here: a hub clock stuck at 1970); a follower takes over
within one TTL of the leader's last renewal; the deposed leader's writes are refused;
a term stops acting once no renewal succeeded for 3/4 of the TTL (a fake monotonic
clock stands for a pause)."""

from __future__ import annotations

import asyncio
import time

import pytest

from backendai.errors import LeaseLost, NotLeader
from hub.leadership import ACT_FRACTION, Leadership, Term
from hub.store import Fence
from tests.fixtures.pg import StoreSpec
from tests.test_hub_store import make

TTL = 1.0


@pytest.fixture
async def two_stores(pg_database):
    spec = StoreSpec("postgresql", dsn=pg_database.dsn,
                     password_file=str(pg_database.password_file))
    a, b = await spec.open(), await spec.open()
    yield a, b
    await a.close()
    await b.close()


async def test_lease_goes_by_database_time_and_a_follower_takes_over(two_stores, monkeypatch):
    sa, sb = two_stores
    real_now = time.time()
    monkeypatch.setattr(time, "time", lambda: 0.0)  # both hubs' clocks are wrong
    a = Leadership(sa, hub_id="hub-a", address=lambda: "a.example:3000", ttl=TTL)
    b = Leadership(sb, hub_id="hub-b", address=lambda: "b.example:3000", ttl=TTL)
    running_a = asyncio.create_task(a.run())
    running_b: asyncio.Task[None] | None = None
    try:
        term = await asyncio.wait_for(a.next_term(), 10)
        running_b = asyncio.create_task(b.run())
        await asyncio.wait_for(_seen_by(b), 5)
        # the lease's times are the database's: now, not 1970
        lease = a.lease
        assert lease is not None and abs(lease.now - real_now) < 60
        assert 0 < lease.expires_at - lease.now <= TTL + 0.01
        # b follows through several TTLs while a renews
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:
            assert not b.leading and a.leading
            await asyncio.sleep(0.05)
        assert b.leader_address() == "a.example:3000"
        with pytest.raises(NotLeader) as refused:
            b.require("StartRollout")
        assert refused.value.leader_address == "a.example:3000"
        assert "hub-a" in str(refused.value)

        running_a.cancel()  # a stops renewing (its process died)
        stopped = time.monotonic()
        term_b = await asyncio.wait_for(b.next_term(), 5 * TTL)
        took = time.monotonic() - stopped
        assert took <= TTL + 0.5, took
        assert term_b.epoch == term.epoch + 1 and b.leading
        # whatever a still holds in memory, its writes are refused
        r, notes = make("r1")
        with pytest.raises(LeaseLost):
            await sa.save(r, r.hosts.values(), notes, fence=term.fence)
        await sb.save(r, r.hosts.values(), notes, fence=term_b.fence)
        # a graceful stop hands over at once
        running_a = asyncio.create_task(a.run())
        await b.release()
        term_a = await asyncio.wait_for(a.next_term(), 2 * TTL)
        assert term_a.epoch == term_b.epoch + 1
    finally:
        tasks = [t for t in (running_a, running_b) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _seen_by(follower: Leadership) -> None:
    """Until the follower has read the lease (it pokes `changes` only when leading)."""
    for _ in range(1000):  # polled: another task's state, bounded by the caller's timeout
        if follower.lease is not None:
            return
        await asyncio.sleep(0.01)


def test_a_term_stops_acting_when_not_renewed_in_time():
    now = [100.0]
    term = Term(epoch=3, act_until=100.0 + TTL * ACT_FRACTION, clock=lambda: now[0])
    assert term.may_act()
    now[0] += TTL * ACT_FRACTION - 0.01
    assert term.may_act()
    now[0] += 0.02  # a pause (SIGSTOP) or a database that does not answer
    assert not term.may_act()
    term.end("test")
    assert term.ended.is_set() and term.why == "test" and not term.may_act()


async def test_a_follower_watcher_that_is_never_woken_still_reads_every_event(two_stores):
    """A follower's WatchRollout is woken by NOTIFY, but always reads by index: with
    no wake-up at all (this store's LISTEN never runs), the leader's later events,
    the final one included, still arrive, in order and without a gap."""
    from hub import rollout_engine as E
    from hub.rollouts import Rollouts

    leader, follower = two_stores
    lease, mine = await leader.acquire_lease("hub-a", "127.0.0.1:3000", 30.0)
    assert mine
    fence = Fence("hub-a", lease.epoch)
    r, notes = make("r1")
    await leader.save(r, r.hosts.values(), notes, fence=fence)
    rollouts = Rollouts(store=follower, links=None, inventory=None,  # type: ignore[arg-type]
                        leadership=Leadership(follower, hub_id="hub-b",
                                              address=lambda: "", ttl=30.0),
                        hub_host=None, tick=1.0)
    woken = follower.rollout_changes.generation
    seen: list[E.Note] = []
    first = asyncio.Event()

    async def watch() -> None:
        async for note in rollouts.watch("r1", 0, True):
            seen.append(note)
            if len(seen) == len(notes):
                first.set()

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(watch())
        await first.wait()  # the watcher has read what was there and waits
        done, more, _ = E.transition(r, E.Control("abort", "test"), time.time())
        assert done.state in E.TERMINAL and more[-1].final
        await leader.save(done, done.hosts.values(), more, fence=fence)
    assert [n.index for n in seen] == list(range(len(notes) + len(more)))
    assert seen[-1].final
    assert follower.rollout_changes.generation == woken  # nothing woke it
