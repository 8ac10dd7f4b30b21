"""The fleet dashboards' change feed (hub/fleet_feed.py) with plain values: what counts
as a change, one shared delta per interval, and per-watcher merging that keeps a slow
dashboard at one pending copy of the fleet, whatever the event rate."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest

from backendai.v1 import manager_pb2 as mpb
from hub import rollout_engine as E
from hub.config import HostEntry
from hub.fleet_feed import FleetFeed, Pending
from hub.inventory import HostView, Inventory
from hub.rollout_plan import make_strategy, plan_waves
from hub.store import ChangeFeed


class FakeStore:
    def __init__(self, rollouts):
        self.rollouts = rollouts
        self.rollout_changes = ChangeFeed()

    async def ids(self, *, limit, active_only=False):
        found = sorted(self.rollouts.values(), key=lambda r: -r.created_at)
        return [r.id for r in found if r.active or not active_only][:limit]


class FakeRunner:
    def __init__(self, r):
        self.r = r


class FakeRollouts:
    """What the feed reads of hub/rollouts.py: runners, get(), store.ids()."""

    def __init__(self):
        self.saved: dict[str, E.Rollout] = {}
        self.runners: dict[str, FakeRunner] = {}
        self.store = FakeStore(self.saved)
        self.gets = 0

    async def get(self, rid):
        self.gets += 1
        runner = self.runners.get(rid)
        return runner.r if runner else self.saved[rid]

    def add(self, r):
        self.saved[r.id] = r
        self.runners[r.id] = FakeRunner(r)

    def update(self, r):
        self.saved[r.id] = r
        if r.active:
            self.runners[r.id].r = r
        else:
            del self.runners[r.id]


def status(version="1.0", state=mpb.SERVICE_STATE_RUNNING):
    return mpb.ServiceStatus(name="ai-agent", state=state, version=version, pid=10)


def inventory(n):
    inv = Inventory(None, heartbeat_interval=10.0)
    for i in range(n):
        view = HostView(HostEntry(f"h{i:04d}", f"10.0.0.{i % 250}:3082", {"g": str(i % 3)}))
        view.reachable, view.status, view.last_seen = True, status(), 1000.0
        inv.hosts[view.name] = view
    return inv


def rollout(hosts, rid="r1", now=1000.0):
    s = make_strategy(waves=["1", "100%"])
    r, _ = E.new_rollout(rollout_id=rid, version="2.0", service="", strategy=s,
                         plan=plan_waves(hosts, s, seed=1), now=now)
    return r


async def test_only_what_the_table_shows_is_a_change():
    inv = inventory(3)
    feed = FleetFeed(inv, FakeRollouts(), contact_interval=5.0)
    w, snap = await feed.watch()
    t = time.time()  # the feed took its baseline now
    assert [h["name"] for h in snap["hosts"]] == ["h0000", "h0001", "h0002"]
    assert snap["type"] == "snapshot" and snap["rollouts"] == []
    assert not await feed.tick(t + 1)  # nothing changed
    inv.hosts["h0001"].status = status(version="2.0")
    inv.hosts["h0002"].last_seen = t + 2  # a contact, not a change
    delta = await feed.tick(t + 2)
    assert list(delta.hosts) == ["h0001"] and delta.hosts["h0001"]["version"] == "2.0"
    assert not delta.contact
    # a new dashboard's snapshot has the latest contact time and the latest state
    w2, snapshot = await feed.watch()
    snap = {h["name"]: h for h in snapshot["hosts"]}
    assert snap["h0002"]["last_seen"] == t + 2 and snap["h0001"]["version"] == "2.0"
    inv.hosts["h0000"].status = status(version="3.0")  # not ticked yet: made fresh
    w3, snapshot = await feed.watch()
    assert snapshot["hosts"][0]["version"] == "3.0"
    w2.close()
    w3.close()
    assert (await feed.tick(t + 3)).hosts["h0000"]["version"] == "3.0"  # still sent to everyone
    delta = await feed.tick(t + 6)  # contact timestamps are refreshed every contact_interval
    assert delta.contact == {"h0002": [t + 2, 0.0]} and not delta.hosts
    inv.hosts["h0000"].reachable = False
    inv.hosts["h0000"].message = "UNAVAILABLE: connection refused"
    del inv.hosts["h0002"]
    delta = await feed.tick(t + 7)
    assert delta.hosts["h0000"]["reachable"] is False and delta.removed == ["h0002"]
    w.close()
    assert not feed.watches


async def test_a_slow_watcher_gets_one_merged_message_not_a_backlog():
    inv = inventory(100)
    feed = FleetFeed(inv, FakeRollouts(), interval=0.01)
    w, _ = await feed.watch()
    # 1,000 status changes over 50 intervals while the watcher reads nothing
    for tick in range(50):
        for i in range(20):
            inv.hosts[f"h{(tick * 20 + i) % 100:04d}"].status = status(version=f"v{tick}")
        w.push(await feed.tick(time.time()))
    changes = w.changes()
    msg = await asyncio.wait_for(anext(changes), 1)
    assert msg["type"] == "changes" and len(msg["hosts"]) == 100  # one row per host
    assert {h["version"] for h in msg["hosts"]} == {"v45", "v46", "v47", "v48", "v49"}
    assert not w.pending  # nothing left behind
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(changes), 0.05)
    await changes.aclose()


async def test_the_loop_sends_at_most_one_message_per_interval():
    inv = inventory(50)
    feed = FleetFeed(inv, FakeRollouts(), interval=0.1)
    w, _ = await feed.watch()
    loop = asyncio.create_task(feed.run())
    stop = time.monotonic() + 1.0

    async def churn():
        n = 0
        while time.monotonic() < stop:
            inv.hosts[f"h{n % 50:04d}"].status = status(version=f"v{n}")
            n += 1
            await asyncio.sleep(0)
        return n

    received = []

    async def read():
        async for msg in w.changes():
            received.append(json.loads(msg) if isinstance(msg, str) else msg)

    reader = asyncio.create_task(read())
    events = await churn()
    await asyncio.sleep(0.25)
    loop.cancel()
    reader.cancel()
    await asyncio.gather(loop, reader, return_exceptions=True)
    assert events > 1000
    assert 3 <= len(received) <= 13  # ~10 intervals in the second, not one per event
    last = {}
    for msg in received:
        last.update({h["name"]: h["version"] for h in msg["hosts"]})
    assert len(last) == 50  # every host's latest value arrived


async def test_rollouts_active_finished_and_the_watched_ones_rows():
    inv = inventory(4)
    ro = FakeRollouts()
    r = rollout(list(inv.hosts))
    ro.add(r)
    feed = FleetFeed(inv, ro)
    _w, snap = await feed.watch(r.id)
    assert [x["id"] for x in snap["rollouts"]] == ["r1"]
    assert snap["rollout"]["id"] == "r1" and len(snap["rollout"]["hosts"]) == 4
    _plain, _ = await feed.watch()  # a fleet page: rollouts, no rows
    assert not await feed.tick(1001.0)
    first = next(iter(r.hosts))
    r2 = replace(r, hosts={**r.hosts, first: replace(
        r.hosts[first], state=E.HostState.FAILED, failed_step="health",
        reason="probe said 503")}, current_wave=0)
    ro.update(r2)
    delta = await feed.tick(1002.0)
    assert delta.rollouts["r1"]["counts"]["failed"] == 1
    detail, rows = delta.details["r1"]
    assert list(rows) == [first] and rows[first]["reason"] == "probe said 503"
    assert detail["waves"][0]["states"] == {"FAILED": 1}
    assert "rollout" in json.loads(delta.text("r1"))
    assert "rollout" not in json.loads(delta.text(""))
    # it ends: the final state is read once and sent; later snapshots reuse it
    ro.update(replace(r2, state=E.RolloutState.ROLLED_BACK, finished_at=1003.0))
    delta = await feed.tick(1003.0)
    assert delta.rollouts["r1"]["state"] == "ROLLED_BACK" and not delta.rollouts["r1"]["active"]
    gets = ro.gets
    for _ in range(3):
        assert (await feed.watch())[1]["rollouts"][0]["state"] == "ROLLED_BACK"
    assert ro.gets == gets


async def test_a_big_fleet_tick_is_cheap():
    """1,000 hosts, nothing changed: the scan every dashboard interval costs little."""
    inv = inventory(1000)
    feed = FleetFeed(inv, FakeRollouts())
    await feed.watch()
    t0 = time.perf_counter()
    for i in range(20):
        await feed.tick(1001.0 + i * 0.25)
    per_tick = (time.perf_counter() - t0) / 20
    assert per_tick < 0.02, per_tick  # well under the 0.25 s interval


async def test_watchers_in_time_share_one_text_and_a_late_one_gets_merged_changes():
    inv = inventory(10)
    feed = FleetFeed(inv, FakeRollouts())
    a, _ = await feed.watch()
    b, _ = await feed.watch()
    late, _ = await feed.watch()
    readers = [a.changes(), b.changes(), late.changes()]
    inv.hosts["h0001"].status = status(version="2.0")
    delta = await feed.tick(time.time())
    for w in (a, b, late):
        w.push(delta)
    first_a = await asyncio.wait_for(anext(readers[0]), 1)
    first_b = await asyncio.wait_for(anext(readers[1]), 1)
    assert isinstance(first_a, str) and first_a is first_b  # serialized once
    assert [h["version"] for h in json.loads(first_a)["hosts"]] == ["2.0"]
    inv.hosts["h0002"].status = status(version="2.0")
    late.push(await feed.tick(time.time()))  # `late` has not read the first one yet
    merged = await asyncio.wait_for(anext(readers[2]), 1)
    assert isinstance(merged, dict)
    assert sorted(h["name"] for h in merged["hosts"]) == ["h0001", "h0002"]
    for r in readers:
        await r.aclose()


async def test_the_shared_text_says_what_the_merged_message_says():
    inv = inventory(4)
    ro = FakeRollouts()
    r = rollout(list(inv.hosts))
    ro.add(r)
    feed = FleetFeed(inv, ro)
    await feed.watch(r.id)
    first = next(iter(r.hosts))
    ro.update(replace(r, next_event=r.next_event + 1,  # a row's change is an event
                      hosts={**r.hosts, first: replace(r.hosts[first],
                                                       state=E.HostState.UPDATING)}))
    inv.hosts["h0002"].status = status(version="2.0")
    del inv.hosts["h0003"]
    delta = await feed.tick(time.time() + 6)  # contact refresh due too
    for rid in ("", r.id):
        pending = Pending()
        pending.merge(delta, rid)
        assert json.loads(delta.text(rid)) == pending.message(delta.now)
    # a rollout's page gets rollouts and its rows, not the fleet's hosts
    other = json.loads(delta.text("other-rollout"))
    assert "rollouts" in other and not {"hosts", "removed_hosts", "contact", "rollout"} & set(other)


async def test_a_follower_reads_the_leaders_rollout_from_the_store_when_it_changed():
    """No runners here (another hub leads): the rollout is what the leader wrote, read
    again when the store says it changed, at most once a FOLLOW_INTERVAL."""
    inv = inventory(3)
    ro = FakeRollouts()
    r = rollout(list(inv.hosts))
    ro.saved[r.id] = r  # stored, no runner
    feed = FleetFeed(inv, ro)
    w, snap = await feed.watch(r.id)
    assert snap["rollout"]["state"] == "RUNNING"
    t = time.time()
    assert not await feed.tick(t + 2)  # nothing changed: the store is not read
    gets = ro.gets
    first = next(iter(r.hosts))
    r2 = replace(r, next_event=r.next_event + 1, hosts={**r.hosts, first: replace(
        r.hosts[first], state=E.HostState.UPDATING, step="download")})
    ro.saved[r.id] = r2
    ro.store.rollout_changes.poke()
    delta = await feed.tick(t + 4)
    assert ro.gets > gets
    assert list(delta.details[r.id][1]) == [first]  # only the row that changed
    assert delta.rollouts[r.id]["counts"]["in_progress"] == 1
    ro.store.rollout_changes.poke()
    assert not await feed.tick(t + 4.5)  # within FOLLOW_INTERVAL: not read again yet
    ro.saved[r.id] = replace(r2, state=E.RolloutState.ABORTED, finished_at=t + 5,
                             next_event=r2.next_event + 1)
    delta = await feed.tick(t + 6)  # it ended: no longer among the active ones
    assert delta.rollouts[r.id]["state"] == "ABORTED"
    assert delta.details[r.id][0]["state"] == "ABORTED"
    w.close()
