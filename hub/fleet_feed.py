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
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from backendai.errors import NotFound
from hub import json_views as views
from hub import rollout_engine as E
from hub.inventory import HostView, Inventory
from hub.rollouts import Rollouts

log = structlog.get_logger(__name__)

INTERVAL = 0.25          # at most 4 messages a second to each dashboard
CONTACT_INTERVAL = 5.0   # how often moved contact timestamps are sent
RECENT = 20              # rollouts in a snapshot

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
        for name, doc in delta.hosts.items():
            self.hosts[name] = doc
            self.removed.discard(name)
        for name in delta.removed:
            self.hosts.pop(name, None)
            self.contact.pop(name, None)
            self.removed.add(name)
        self.rollouts.update(delta.rollouts)
        self.contact.update(delta.contact)
        if rollout_id and rollout_id in delta.details:
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

    hosts: dict[str, JSON] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    rollouts: dict[str, JSON] = field(default_factory=dict)
    details: dict[str, tuple[JSON, dict[str, JSON]]] = field(default_factory=dict)
    contact: dict[str, list[float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.removed or self.rollouts or self.details
                    or self.contact)


class Watch:
    """One dashboard's subscription: `changes()` yields merged pending changes, one
    message at a time, as fast as the dashboard takes them and no faster than the
    feed's interval."""

    def __init__(self, feed: FleetFeed, rollout_id: str) -> None:
        self.feed = feed
        self.rollout_id = rollout_id
        self.pending = Pending()
        self.wakeup = asyncio.Event()

    def push(self, delta: Delta) -> None:
        self.pending.merge(delta, self.rollout_id)
        if self.pending:
            self.wakeup.set()

    async def changes(self) -> AsyncIterator[JSON]:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
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
        self._hosts: dict[str, tuple[object, ...]] = {}
        self._contact: dict[str, list[float]] = {}
        self._contact_sent = 0.0
        self._rollouts: dict[str, E.Rollout] = {}     # active ones, as last looked at
        self._finished: dict[str, JSON] = {}           # summaries of finished rollouts
        self._details: dict[str, E.Rollout] = {}       # watched rollouts, as last sent
        self.ticks = 0

    # ---------------------------------------------------------------- watchers

    def watch(self, rollout_id: str = "") -> tuple[Watch, JSON]:
        """Subscribe; returns the watch and the snapshot to send first. rollout_id:
        also follow that rollout's waves and host rows (NotFound when unknown)."""
        if not self.watches:
            self._catch_up()  # nobody watched: the baseline is stale
        now = time.time()
        snapshot: JSON = {
            "type": "snapshot", "server_time": now, "interval": self.interval,
            "hosts": views.hosts(self.inventory.select({}), self.inventory, now),
            "rollouts": self._recent()}
        if rollout_id:
            r = self.rollouts.get(rollout_id)
            rollout_id = r.id
            self._details.setdefault(r.id, r)
            snapshot["rollout"] = views.rollout(r)
        w = Watch(self, rollout_id)
        self.watches.add(w)
        return w, snapshot

    def _recent(self) -> list[JSON]:
        out = []
        for rid in self.rollouts.store.ids(limit=RECENT):
            runner = self.rollouts.runners.get(rid)
            if runner is not None:
                out.append(views.rollout_summary(runner.r))
                continue
            summary = self._finished.get(rid)
            if summary is None:
                try:
                    r = self.rollouts.get(rid)
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
                delta = self.tick(time.time())
            except Exception:
                log.exception("fleet_feed.tick_error")
                continue
            if delta:
                for w in list(self.watches):
                    w.push(delta)

    def _catch_up(self) -> None:
        """Take the current state as the baseline without reporting it."""
        self.tick(time.time())

    def tick(self, now: float) -> Delta:
        self.ticks += 1
        delta = Delta()
        self._host_changes(delta, now)
        self._rollout_changes(delta)
        return delta

    def _host_changes(self, delta: Delta, now: float) -> None:
        inv = self.inventory
        seen = self._hosts
        contact_due = now - self._contact_sent >= self.contact_interval
        for name, view in inv.hosts.items():
            key = _host_key(view, inv.agent_connected(view, now))
            if seen.get(name) != key:
                seen[name] = key
                delta.hosts[name] = views.host(view, inv, now)
                self._contact[name] = [view.last_seen, view.agent_heartbeat]
            elif contact_due:
                stamps = [view.last_seen, view.agent_heartbeat]
                if self._contact.get(name) != stamps:
                    self._contact[name] = stamps
                    delta.contact[name] = stamps
        if contact_due:
            self._contact_sent = now
        if len(seen) != len(inv.hosts):
            for name in [n for n in seen if n not in inv.hosts]:
                del seen[name]
                self._contact.pop(name, None)
                delta.removed.append(name)

    def _rollout_changes(self, delta: Delta) -> None:
        runners = self.rollouts.runners
        for rid, runner in runners.items():
            if self._rollouts.get(rid) is not runner.r:
                self._rollouts[rid] = runner.r
                delta.rollouts[rid] = views.rollout_summary(runner.r)
                self._finished.pop(rid, None)
        for rid in [i for i in self._rollouts if i not in runners]:
            del self._rollouts[rid]  # it ended (or the hub stops): its final state
            try:
                r = self.rollouts.get(rid)
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
            running = runners.get(rid)
            if running is not None and rid not in delta.details:
                self._detail(delta, rid, running.r)

    def _detail(self, delta: Delta, rid: str, r: E.Rollout) -> None:
        """The watched rollout's summary, waves and changed rows since last sent."""
        last = self._details.get(rid)
        if last is r:
            return
        before = last.hosts if last is not None else {}
        rows = {name: views.host_run(h) for name, h in r.hosts.items()
                if before.get(name) is not h}
        self._details[rid] = r
        detail = views.rollout_summary(r)
        detail["waves"] = views.waves(r)
        delta.details[rid] = (detail, rows)
