"""The hub's store, on both backends (SQLite in a file, a real PostgreSQL): a rollout
saved and loaded is the same value; events come back in order from any index; finished
rollouts beyond the kept number are pruned; a rollout saved in one process is there after
the process is killed; a write under an epoch that is no longer current keeps nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from backendai.errors import LeaseLost
from hub import rollout_engine as E
from hub.config import HostEntry
from hub.rollout_plan import make_strategy, plan_waves
from hub.store import Fence
from tests.fixtures.hub_procs import ROOT


def make(rid: str, now: float = 1000.0, hosts=("a", "b", "c")) -> tuple[E.Rollout, list]:
    s = make_strategy(waves=["1", "100%"], max_parallel=2, pause_until_promote=True)
    return E.new_rollout(rollout_id=rid, version="2.0", service="svc", strategy=s,
                         plan=plan_waves(list(hosts), s, 9), now=now,
                         target_labels={"group": "edge"}, target_hosts=tuple(hosts))


@pytest.fixture
async def store(store_spec):
    s = await store_spec.open()
    yield s
    await s.close()


async def lead(store, hub_id="hub-a") -> Fence:
    lease, mine = await store.acquire_lease(hub_id, "127.0.0.1:3000", 30.0)
    assert mine
    return Fence(hub_id, lease.epoch)


async def test_roundtrip_and_events(store):
    fence = await lead(store)
    r, notes = make("r1")
    await store.save(r, r.hosts.values(), notes, fence=fence)
    r2, more, _ = E.transition(r, E.Tick(), 1001)
    await store.save(r2, [h for n, h in r2.hosts.items() if r.hosts[n] is not h], more,
                     fence=fence)
    loaded = await store.load("r1")
    assert loaded == r2
    assert list(loaded.hosts) == list(r2.hosts)  # plan order kept
    events = await store.events("r1", 0)
    assert [e.index for e in events] == list(range(r2.next_event))
    assert await store.events("r1", 2) == events[2:]
    assert await store.load("nope") is None
    assert await store.is_active("r1") and not await store.is_active("nope")


async def test_prune_keeps_active_and_newest(store):
    fence = await lead(store)
    for i in range(5):
        r, notes = make(f"r{i}", now=1000.0 + i)
        if i != 0:  # r0 stays active
            r = dataclasses.replace(r, state=E.RolloutState.SUCCEEDED)
        await store.save(r, r.hosts.values(), notes, fence=fence)
    assert await store.prune(2, fence=fence) == 2
    assert sorted(await store.ids(limit=10)) == ["r0", "r3", "r4"]
    assert await store.ids(limit=10, active_only=True) == ["r0"]
    assert await store.events("r1", 0) == [] and await store.load("r1") is None


async def test_registered_hosts_survive(store_spec):
    store = await store_spec.open()
    await store.save_host(HostEntry("n1", "10.0.0.1:3082", {"a": "b"}, source="registered"), 1.0)
    await store.save_host(HostEntry("n1", "10.0.0.2:3082", {}, source="registered"), 2.0)
    await store.close()
    again = await store_spec.open()
    try:
        assert await again.registered_hosts() == [HostEntry("n1", "10.0.0.2:3082", {},
                                                            source="registered")]
        # by sequence: what changed after a given point
        await again.save_host(HostEntry("n2", "10.0.0.3:3082", {}, source="registered"), 3.0)
        everything, top = await again.hosts_since(0)
        assert [e.name for e in everything] == ["n1", "n2"]
        newer, top2 = await again.hosts_since(top - 1)
        assert [e.name for e in newer] == ["n2"] and top2 == top
        assert await again.hosts_since(top) == ([], top)
    finally:
        await again.close()


async def test_saved_state_survives_kill9(store_spec):
    """Write in a child that SIGKILLs itself right after the save returns."""
    code = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_hub_store import make
        from tests.fixtures.pg import StoreSpec
        from hub.store import Fence

        async def main():
            store = await StoreSpec.from_json({store_spec.to_json()!r}).open()
            lease, _ = await store.acquire_lease("child", "127.0.0.1:1", 30.0)
            r, notes = make("r9")
            await store.save(r, r.hosts.values(), notes, fence=Fence("child", lease.epoch))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert res.returncode == -9
    store = await store_spec.open()
    try:
        loaded = await store.load("r9")
        assert loaded is not None and loaded == make("r9")[0]
    finally:
        await store.close()


async def test_a_write_under_a_stale_epoch_keeps_nothing(store):
    old = await lead(store, "hub-a")
    r, notes = make("r1")
    await store.save(r, r.hosts.values(), notes, fence=old)
    new = await lead(store, "hub-a")  # taken again (a restart): a new epoch
    assert new.epoch == old.epoch + 1
    r2, more, _ = E.transition(r, E.Tick(), 1001)
    assert more
    with pytest.raises(LeaseLost):
        await store.save(r2, r2.hosts.values(), more, fence=old)
    with pytest.raises(LeaseLost):
        await store.prune(0, fence=old)
    # the right epoch number under another holder's name is not the lease either (a
    # database that lost the last lease changes may hand the number out again)
    with pytest.raises(LeaseLost):
        await store.save(r2, r2.hosts.values(), more, fence=Fence("hub-b", new.epoch))
    assert await store.load("r1") == r  # nothing of the refused writes
    assert len(await store.events("r1", 0)) == r.next_event
    await store.save(r2, r2.hosts.values(), more, fence=new)
    assert await store.load("r1") == r2


async def test_lease_renew_and_release(store):
    lease, mine = await store.acquire_lease("hub-a", "10.0.0.1:3000", 30.0)
    assert mine and lease.holder == "hub-a" and lease.live and lease.remaining > 25
    renewed = await store.renew_lease("hub-a", lease.epoch, 30.0)
    assert renewed is not None and renewed.epoch == lease.epoch
    assert renewed.expires_at >= lease.expires_at
    assert await store.renew_lease("hub-a", lease.epoch + 1, 30.0) is None  # not that epoch
    assert await store.renew_lease("hub-b", lease.epoch, 30.0) is None      # not that holder
    await store.release_lease("hub-a", lease.epoch)
    seen = await store.read_lease()
    assert seen is not None and not seen.live and seen.epoch == lease.epoch
    assert await store.renew_lease("hub-a", lease.epoch, 30.0) is None      # ran out


async def test_postgresql_lease_is_taken_only_when_free(pg_database):
    """Two hubs on one database: the second sees the first's lease until it runs out
    (database time) or is released; each taking raises the epoch."""
    from tests.fixtures.pg import StoreSpec

    spec = StoreSpec("postgresql", dsn=pg_database.dsn,
                     password_file=str(pg_database.password_file))
    a, b = await spec.open(), await spec.open()
    try:
        first, mine = await a.acquire_lease("hub-a", "10.0.0.1:3000", 30.0)
        assert mine
        seen, mine = await b.acquire_lease("hub-b", "10.0.0.2:3000", 30.0)
        assert not mine and seen.holder == "hub-a" and seen.address == "10.0.0.1:3000"
        assert seen.epoch == first.epoch
        await a.release_lease("hub-a", first.epoch)
        taken, mine = await b.acquire_lease("hub-b", "10.0.0.2:3000", 30.0)
        assert mine and taken.holder == "hub-b" and taken.epoch == first.epoch + 1
        r, notes = make("r1")
        with pytest.raises(LeaseLost):
            await a.save(r, r.hosts.values(), notes, fence=Fence("hub-a", first.epoch))
        assert await b.load("r1") is None
        # a lease that ran out (by the database's clock) is free for the taking
        pg_database.psql("UPDATE hub_lease SET expires_at = now() - interval '1 second'")
        again, mine = await a.acquire_lease("hub-a", "10.0.0.1:3000", 30.0)
        assert mine and again.epoch == taken.epoch + 1
        # a live lease of this hub's own id: taken (a restarted hub), unless only an
        # expired one may be (another process was found holding it under that id)
        seen, mine = await b.acquire_lease("hub-a", "10.0.0.3:3000", 30.0,
                                           only_if_expired=True)
        assert not mine and (seen.epoch, seen.address) == (again.epoch, "10.0.0.1:3000")
        own, mine = await b.acquire_lease("hub-a", "10.0.0.3:3000", 30.0)
        assert mine and own.epoch == again.epoch + 1
    finally:
        await a.close()
        await b.close()
