"""The fleet inventory: hosts from the static config plus those that registered, and the
live state of each, kept current from its manager's WatchStatus stream (reconnecting
with jittered exponential backoff, so a fleet of managers coming back does not see a
synchronized reconnect storm).

The hub asks each manager to re-send its status every `contact_interval` seconds
without a change (WatchStatusRequest.keepalive_seconds): `last_seen` is the last
contact, not the last change. A keepalive moves only the time; it is not a change
(`changed` is not set), so watchers of the fleet are not woken for it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
import structlog

from backendai.errors import NotFound
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import manager_pb2 as mpb
from hub.config import HostEntry
from hub.manager_links import ManagerLinks, describe

log = structlog.get_logger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
CONNECT_HOLD = 5.0  # seconds a stream being opened holds its place at most
# HostView fields whose change keeps ListHosts' kept bytes: not shown, or appended to
# them at every call (hub/pb_convert.py host_wire: the times every contact moves)
UNCACHED = frozenset({"wire", "task", "last_seen", "agent_heartbeat"})


@dataclass(slots=True)
class HostView:
    entry: HostEntry
    reachable: bool = False
    status: mpb.ServiceStatus | None = None
    last_seen: float = 0.0
    message: str = "not contacted yet"
    agent_address: str = ""
    agent_version: str = ""
    agent_heartbeat: float = 0.0
    facts: apb.HostFacts | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # the host as ListHosts sends it, serialized (hub/pb_convert.py host_wire); any
    # change to the view drops it
    wire: bytes | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name not in UNCACHED:
            object.__setattr__(self, "wire", None)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def version(self) -> str:
        return self.status.version if self.status is not None else ""

    @property
    def running(self) -> bool:
        return self.status is not None and self.status.state == mpb.SERVICE_STATE_RUNNING


class _Permit:
    """A place among the status streams being opened (Inventory's `watch_connects`):
    given back at the stream's first message, at its end, or after CONNECT_HOLD seconds
    (a manager that does not answer must not keep others waiting)."""

    def __init__(self, gate: asyncio.Semaphore | None) -> None:
        self.gate = gate
        self.timer = asyncio.get_running_loop().call_later(CONNECT_HOLD, self.release) \
            if gate is not None else None

    @classmethod
    async def take(cls, gate: asyncio.Semaphore | None) -> _Permit:
        if gate is not None:
            await gate.acquire()
        return cls(gate)

    def release(self) -> None:
        if self.gate is not None:
            self.gate.release()
            self.gate = None
            if self.timer is not None:
                self.timer.cancel()


class Inventory:
    def __init__(self, links: ManagerLinks, *, heartbeat_interval: float,
                 watch_connects: int = 0, contact_interval: float = 5.0) -> None:
        """watch_connects: status streams being opened at once, at most (0: no limit;
        hub/admission.py): a hub starting with 10,000 hosts connects them in waves."""
        self.links = links
        self.heartbeat_interval = heartbeat_interval
        self.contact_interval = contact_interval
        self._connecting = asyncio.Semaphore(watch_connects) if watch_connects > 0 else None
        self.hosts: dict[str, HostView] = {}
        self._by_name: list[HostView] | None = None  # every view, sorted by name
        self.changed = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.connected = 0
        # told when a host's manager becomes reachable or is lost (the event history)
        self.on_reachability: Callable[[HostView, bool, str], None] | None = None
        self.reconnects = 0  # status streams re-opened after they ended (/metrics)

    def add(self, entry: HostEntry) -> HostView:
        """Add or replace a host; (re)start its watcher when its manager address changed."""
        old = self.hosts.get(entry.name)
        view = HostView(entry)
        if old is not None:
            if old.entry == entry:
                return old
            if old.entry.manager_address == entry.manager_address and \
                    old.entry.service == entry.service:
                old.entry = entry
                return old
            self._stop_watch(old)
            view.agent_address, view.agent_version = old.agent_address, old.agent_version
            view.agent_heartbeat, view.facts = old.agent_heartbeat, old.facts
        self.hosts[entry.name] = view
        self._by_name = None
        self._start_watch(view)
        return view

    def get(self, name: str) -> HostView:
        view = self.hosts.get(name)
        if view is None:
            raise NotFound(f"host {name!r}: not in the inventory")
        return view

    def select(self, labels: dict[str, str], names: Iterable[str] = (),
               *, role: str | None = None) -> list[HostView]:
        wanted = list(names)
        for name in wanted:
            self.get(name)
        if not wanted and not labels and role is None:
            return list(self.by_name())
        out = []
        for view in self.hosts.values():
            if role is not None and view.entry.role != role:
                continue
            if wanted and view.name not in wanted:
                continue
            if any(view.entry.labels.get(k) != v for k, v in labels.items()):
                continue
            out.append(view)
        return sorted(out, key=lambda v: v.name)

    def by_name(self) -> list[HostView]:
        """Every view sorted by name (kept until a host is added or replaced)."""
        if self._by_name is None or len(self._by_name) != len(self.hosts):
            self._by_name = sorted(self.hosts.values(), key=lambda v: v.name)
        return self._by_name

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Watch every host until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for view in self.hosts.values():
                self._start_watch(view)
            try:
                await asyncio.Event().wait()
            finally:
                self._tg = None
                for view in self.hosts.values():
                    self._stop_watch(view)

    def _start_watch(self, view: HostView) -> None:
        if self._tg is not None and view.task is None:
            view.task = self._tg.create_task(self._watch(view), name=f"watch-{view.name}")

    def _stop_watch(self, view: HostView) -> None:
        if view.task is not None:
            view.task.cancel()
            view.task = None

    async def _watch(self, view: HostView) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            entry = view.entry
            permit = await _Permit.take(self._connecting)
            try:
                stub = self.links.stub(entry.manager_address)
                call = stub.WatchStatus(mpb.WatchStatusRequest(
                    service=entry.service, keepalive_seconds=self.contact_interval))
                try:
                    async for st in call:
                        permit.release()
                        view.last_seen = time.time()  # every message is a contact
                        if view.reachable and _same(view.status, st):
                            continue  # a keepalive: nothing changed
                        if not view.reachable:
                            self.connected += 1
                            log.info("inventory.host_up", host=view.name, version=st.version)
                            self._tell(view, True, f"version {st.version or 'unknown'}")
                        view.reachable, view.status = True, st
                        view.message = st.message
                        backoff = BACKOFF_INITIAL
                        self.changed.set()
                finally:
                    call.cancel()
                reason = "status stream ended"
            except grpc.aio.AioRpcError as exc:
                reason = describe(exc)
            except Exception as exc:
                log.exception("inventory.watch_error", host=view.name)
                reason = f"internal error: {type(exc).__name__}"
            finally:
                permit.release()
            if view.reachable:
                self.connected -= 1
                log.warning("inventory.host_down", host=view.name, reason=reason)
                self._tell(view, False, reason)
            view.reachable, view.message = False, reason
            self.changed.set()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.reconnects += 1

    def _tell(self, view: HostView, up: bool, why: str) -> None:
        if self.on_reachability is not None:
            try:
                self.on_reachability(view, up, why)
            except Exception:  # the history must never stop the watch
                log.exception("inventory.reachability_hook_failed", host=view.name)

    async def close(self) -> None:
        for view in self.hosts.values():
            task = view.task
            self._stop_watch(view)
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def last_contact(self, view: HostView) -> float:
        """The last time this host was heard from: its manager's status stream (changes
        and keepalives) or its agent's heartbeat."""
        return max(view.last_seen, view.agent_heartbeat)

    def agent_connected(self, view: HostView, now: float) -> bool:
        return bool(view.agent_heartbeat) and \
            now - view.agent_heartbeat < 3 * self.heartbeat_interval


def _same(old: mpb.ServiceStatus | None, new: mpb.ServiceStatus) -> bool:
    """Whether a status message says what the last one did (uptime aside, which grows
    on every message)."""
    if old is None:
        return False
    up_old, up_new = old.uptime_seconds, new.uptime_seconds
    old.uptime_seconds = new.uptime_seconds = 0.0
    try:
        return old == new
    finally:
        old.uptime_seconds, new.uptime_seconds = up_old, up_new
