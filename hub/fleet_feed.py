"""What the fleet dashboards see change, coalesced (docs/DASHBOARD.md).

`FleetFeed.run()` looks at the hub's own objects every `interval` seconds while anyone
watches: which hosts changed (the manager's status, reachability, the agent's link),
which rollouts changed (every active runner's rollout, and one that just finished), and
for a rollout somebody is looking at, which of its host rows changed. The difference is
computed once per interval for every watcher, not per event: a 1,000-host rollout
that records hundreds of events a second still costs each dashboard at most one
message per interval.

Each `Watch` merges what it has not sent yet into one pending change (latest value per
host, per rollout, per row), so a dashboard that reads slowly gets fewer, larger
messages and never more memory than one copy of the fleet.

Timestamps that move on every contact (last seen, agent heartbeats) are not changes by
themselves; they are refreshed every `contact_interval` seconds instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from backendai.errors import NotFound, StoreUnavailable
from hub import json_views as views
from hub import rollout_engine as E
from hub.inventory import HostView, Inventory
from hub.rollouts import Rollouts

log = structlog.get_logger(__name__)

INTERVAL = 0.25          # at most 4 messages a second to each dashboard
CONTACT_INTERVAL = 5.0   # how often moved contact timestamps are sent
RECENT = 20              # rollouts in a snapshot
FOLLOW_INTERVAL = 1.0    # a follower reads the active rollouts again at most this often
MAX_ACTIVE = 10          # active rollouts a follower reads (one is active at a time)

JSON = dict[str, Any]


def _host_key(view: HostView, connected: bool) -> tuple[object, ...]:
    """What the fleet table shows of a host, timestamps aside (a new status message is
    a new object: identity is enough)."""
    return (view.entry, view.status, view.reachable, view.message, view.agent_address,
            view.agent_version, connected)


@dataclass(slots=True)
class Pending:
    """Changes not sent to one watcher yet: the latest value of each thing."""

    hosts: dict[str, JSON] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    rollouts: dict[str, JSON] = field(default_factory=dict)
    detail: JSON | None = None               # the watched rollout: summary and waves
    rows: dict[str, JSON] = field(default_factory=dict)  # ... and its changed host rows
    contact: dict[str, list[float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.removed or self.rollouts or self.detail is not None
                    or self.rows or self.contact)

    def merge(self, delta: Delta, rollout_id: str) -> None:
        """Take a delta in: the fleet's hosts for a fleet watcher (`rollout_id` ""), the
        rollout's waves and rows for a watcher of that rollout; rollouts for both."""
        self.rollouts.update(delta.rollouts)
        if not rollout_id:
            for name, doc in delta.hosts.items():
                self.hosts[name] = doc
                self.removed.discard(name)
            for name in delta.removed:
                self.hosts.pop(name, None)
                self.contact.pop(name, None)
                self.removed.add(name)
            self.contact.update(delta.contact)
        elif rollout_id in delta.details:
            detail, rows = delta.details[rollout_id]
            self.detail = detail
            self.rows.update(rows)

    def message(self, now: float) -> JSON:
        out: JSON = {"type": "changes", "server_time": now}
        if self.hosts:
            out["hosts"] = list(self.hosts.values())
        if self.removed:
            out["removed_hosts"] = sorted(self.removed)
        if self.rollouts:
            out["rollouts"] = list(self.rollouts.values())
        if self.detail is not None:
            out["rollout"] = {**self.detail, "hosts": list(self.rows.values())}
        if self.contact:
            out["contact"] = self.contact
        return out


@dataclass(slots=True)
class Delta:
    """What changed in one interval (shared by every watcher)."""

    now: float = 0.0
    hosts: dict[str, JSON] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    rollouts: dict[str, JSON] = field(default_factory=dict)
    details: dict[str, tuple[JSON, dict[str, JSON]]] = field(default_factory=dict)
    contact: dict[str, list[float]] = field(default_factory=dict)
    texts: dict[str, str | None] = field(default_factory=dict)   # per watched rollout
    parts: dict[str, str] = field(default_factory=dict)          # serialized once

    def __bool__(self) -> bool:
        return bool(self.hosts or self.removed or self.rollouts or self.details
                    or self.contact)

    def text(self, rollout_id: str) -> str | None:
        """This delta as the message a watcher of `rollout_id` ("" for none) gets, made
        once for every watcher that reads in time (None: nothing for it). The parts every
        watcher shares (hosts, rollouts) are serialized once, whatever it watches."""
        if rollout_id not in self.texts:
            parts = [f'"type":"changes","server_time":{_dumps(self.now)}']
            if self.hosts and not rollout_id:
                parts.append('"hosts":' + self._part("hosts", list(self.hosts.values())))
            if self.removed and not rollout_id:
                parts.append('"removed_hosts":' + _dumps(sorted(self.removed)))
            if self.rollouts:
                parts.append('"rollouts":' + self._part("rollouts",
                                                        list(self.rollouts.values())))
            if rollout_id and rollout_id in self.details:
                detail, rows = self.details[rollout_id]
                parts.append('"rollout":' + _dumps({**detail, "hosts": list(rows.values())}))
            if self.contact and not rollout_id:
                parts.append('"contact":' + self._part("contact", self.contact))
            self.texts[rollout_id] = "{" + ",".join(parts) + "}" if len(parts) > 1 else None
        return self.texts[rollout_id]

    def _part(self, key: str, value: object) -> str:
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = _dumps(value)
        return part


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class Watch:
    """One dashboard's subscription: `changes()` yields merged pending changes, one
    message at a time, as fast as the dashboard takes them and no faster than the
    feed's interval."""

    def __init__(self, feed: FleetFeed, rollout_id: str) -> None:
        self.feed = feed
        self.rollout_id = rollout_id
        self.pending = Pending()
        self.single: Delta | None = None  # the one delta not taken yet (the usual case)
        self.wakeup = asyncio.Event()

    def push(self, delta: Delta) -> None:
        if self.single is None and not self.pending:
            self.single = delta  # sent as the text every watcher in time shares
        else:
            if self.single is not None:
                self.pending.merge(self.single, self.rollout_id)
                self.single = None
            self.pending.merge(delta, self.rollout_id)
        self.wakeup.set()

    async def changes(self) -> AsyncIterator[JSON | str]:
        """Messages: a shared JSON text when this watcher took every delta in time, else
        the merged changes (a dict) of the deltas it fell behind on."""
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            single, self.single = self.single, None
            if single is not None:
                text = single.text(self.rollout_id)
                if text is not None:
                    yield text
                continue
            pending, self.pending = self.pending, Pending()
            if pending:
                yield pending.message(time.time())

    def close(self) -> None:
        self.feed.watches.discard(self)


class FleetFeed:
    def __init__(self, inventory: Inventory, rollouts: Rollouts, *,
                 interval: float = INTERVAL, contact_interval: float = CONTACT_INTERVAL,
                 ) -> None:
        self.inventory = inventory
        self.rollouts = rollouts
        self.interval = interval
        self.contact_interval = contact_interval
        self.watches: set[Watch] = set()
        self._hosts: dict[str, tuple[object, ...]] = {}   # what each host showed, last tick
        self._docs: dict[str, JSON] = {}                    # ... and its JSON then
        self._contact: dict[str, list[float]] = {}
        self._contact_sent = 0.0
        self._rollouts: dict[str, E.Rollout] = {}     # active ones, as last looked at
        self._finished: dict[str, JSON] = {}           # summaries of finished rollouts
        self._details: dict[str, E.Rollout] = {}       # watched rollouts, as last sent
        self._polled = (-1, 0.0)                       # the store's generation, when read
        self._lock = asyncio.Lock()                    # one tick or snapshot at a time
        self.ticks = 0

    # ---------------------------------------------------------------- watchers

    async def watch(self, rollout_id: str = "") -> tuple[Watch, JSON]:
        """Subscribe; returns the watch and the snapshot to send first: the hosts and the
        recent rollouts, or with `rollout_id` that rollout's waves and host rows instead
        of the hosts (NotFound when unknown; StoreUnavailable while the database is)."""
        async with self._lock:
            if not self.watches:
                await self._tick(time.time())  # nobody watched: take a fresh baseline
            now = time.time()
            snapshot: JSON = {"type": "snapshot", "server_time": now,
                              "interval": self.interval, "rollouts": await self._recent()}
            if not rollout_id:
                snapshot["hosts"] = self._host_docs(now)
            else:
                r = await self.rollouts.get(rollout_id)
                rollout_id = r.id
                self._details.setdefault(r.id, r)
                snapshot["rollout"] = views.rollout(r)
            w = Watch(self, rollout_id)
            self.watches.add(w)
            return w, snapshot

    def _host_docs(self, now: float) -> list[JSON]:
        """Every host's JSON, by name: the one made at the last tick when the host shows
        the same since (with its contact times brought up to date), else a fresh one (the
        next tick still reports it to everyone)."""
        inv = self.inventory
        out = []
        for view in inv.select({}):
            doc = self._docs.get(view.name)
            if doc is None or self._hosts.get(view.name) != _host_key(
                    view, inv.agent_connected(view, now)):
                out.append(views.host(view, inv, now))
                continue
            doc = {**doc, "last_seen": inv.last_contact(view)}
            if doc["agent"] is not None:
                doc["agent"] = {**doc["agent"], "last_heartbeat": view.agent_heartbeat}
            out.append(doc)
        return out

    async def _recent(self) -> list[JSON]:
        out = []
        for rid in await self.rollouts.store.ids(limit=RECENT):
            runner = self.rollouts.runners.get(rid)
            if runner is not None:
                out.append(views.rollout_summary(runner.r))
                continue
            summary = self._finished.get(rid)
            if summary is None:
                try:
                    r = await self.rollouts.get(rid)
                except NotFound:
                    continue
                summary = views.rollout_summary(r)
                if not r.active:
                    self._finished[rid] = summary
            out.append(summary)
        return out

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Compute and hand out the changes every interval while anyone watches."""
        while True:
            await asyncio.sleep(self.interval)
            if not self.watches:
                continue
            try:
                delta = await self.tick(time.time())
            except StoreUnavailable as exc:
                log.warning("fleet_feed.store_unavailable", error=str(exc))
                continue
            except Exception:
                log.exception("fleet_feed.tick_error")
                continue
            if delta:
                for w in list(self.watches):
                    w.push(delta)

    async def tick(self, now: float) -> Delta:
        """What changed since the last tick."""
        async with self._lock:
            return await self._tick(now)

    async def _tick(self, now: float) -> Delta:
        self.ticks += 1
        delta = Delta(now)
        self._host_changes(delta, now)
        await self._rollout_changes(delta, now)
        return delta

    def _host_changes(self, delta: Delta, now: float) -> None:
        inv = self.inventory
        seen = self._hosts
        contact_due = now - self._contact_sent >= self.contact_interval
        for name, view in inv.hosts.items():
            key = _host_key(view, inv.agent_connected(view, now))
            if seen.get(name) != key:
                seen[name] = key
                delta.hosts[name] = self._docs[name] = views.host(view, inv, now)
                self._contact[name] = [inv.last_contact(view), view.agent_heartbeat]
            elif contact_due:
                stamps = [inv.last_contact(view), view.agent_heartbeat]
                if self._contact.get(name) != stamps:
                    self._contact[name] = stamps
                    delta.contact[name] = stamps
        if contact_due:
            self._contact_sent = now
        if len(seen) != len(inv.hosts):
            for name in [n for n in seen if n not in inv.hosts]:
                del seen[name]
                self._docs.pop(name, None)
                self._contact.pop(name, None)
                delta.removed.append(name)

    async def _active(self, now: float) -> dict[str, E.Rollout] | None:
        """The active rollouts now: the leader's runners; on a follower (no runners),
        what the leader wrote, read again when the store says something changed (at most
        every FOLLOW_INTERVAL). None: not read this time (nothing is known to end)."""
        runners = self.rollouts.runners
        if runners:
            return {rid: runner.r for rid, runner in runners.items()}
        generation = self.rollouts.store.rollout_changes.generation
        if generation == self._polled[0] or now - self._polled[1] < FOLLOW_INTERVAL:
            return None if self._rollouts else {}
        self._polled = (generation, now)
        found = {}
        for rid in await self.rollouts.store.ids(limit=MAX_ACTIVE, active_only=True):
            with contextlib.suppress(NotFound):
                found[rid] = await self.rollouts.get(rid)
        return found

    async def _rollout_changes(self, delta: Delta, now: float) -> None:
        active = await self._active(now)
        if active is None:
            return
        for rid, r in active.items():
            last = self._rollouts.get(rid)
            if last is not r and (last is None or _moved(last, r)):
                self._rollouts[rid] = r
                delta.rollouts[rid] = views.rollout_summary(r)
                self._finished.pop(rid, None)
        for rid in [i for i in self._rollouts if i not in active]:
            del self._rollouts[rid]  # it ended (or the hub stops leading): its final state
            try:
                r = await self.rollouts.get(rid)
            except NotFound:
                continue
            delta.rollouts[rid] = summary = views.rollout_summary(r)
            if not r.active:
                self._finished[rid] = summary
            if rid in self._details:
                self._detail(delta, rid, r)
        wanted = {w.rollout_id for w in self.watches if w.rollout_id}
        for rid in [i for i in self._details if i not in wanted]:
            del self._details[rid]
        for rid in wanted:
            current = active.get(rid)
            if current is not None and rid not in delta.details:
                self._detail(delta, rid, current)

    def _detail(self, delta: Delta, rid: str, r: E.Rollout) -> None:
        """The watched rollout's summary, waves and changed rows since last sent."""
        last = self._details.get(rid)
        if last is r or (last is not None and not _moved(last, r)):
            return
        before = last.hosts if last is not None else {}
        rows = {}
        for name, h in r.hosts.items():
            was = before.get(name)
            if was is not h and was != h:  # a row read again from the store is a new object
                rows[name] = views.host_run(h)
        self._details[rid] = r
        detail = views.rollout_summary(r)
        detail["waves"] = views.waves(r)
        delta.details[rid] = (detail, rows)


def _moved(last: E.Rollout, r: E.Rollout) -> bool:
    """Whether a rollout changed since `last` in what a dashboard shows: every such
    change records an event (its clock alone moves on every tick of its runner)."""
    return _shown(last) != _shown(r)


def _shown(r: E.Rollout) -> tuple[object, ...]:
    return (r.next_event, r.state, r.current_wave, r.message, r.awaiting_promote,
            r.resume_at, r.finished_at)
