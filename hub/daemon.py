"""The hub daemon's lifecycle: run() returns only when fully stopped; shutdown() is
idempotent. Graceful stop order: health NOT_SERVING, HTTP and gRPC stop with grace, then
the rollout runners (their state is already stored), the lease (released, so another hub
takes over at once), and the inventory watchers.

The store is SQLite in state_dir or a PostgreSQL several hubs share (hub/store.py); an
unreachable database at start is retried with backoff until it answers or the hub is
asked to stop. Whether this hub leads is hub/leadership.py's business."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from backendai.daemon_support import DaemonLifecycle, InstanceLock, Secrets, write_ready_file
from backendai.errors import StoreUnavailable
from backendai.events.log import EventLog, Retention
from backendai.grpc_server import GrpcServer
from backendai.tls import ReloadableServerCredentials
from hub import preflight
from hub.admission import Admission
from hub.config import HubConfig
from hub.fleet import Fleet
from hub.grpc_api import SERVICE_NAME, HubServicer
from hub.host_history import HostHistory
from hub.host_sync import HostSync
from hub.http_app import HubHttp
from hub.identity import advertise_address, local_hub_id
from hub.inventory import Inventory
from hub.leadership import Leadership
from hub.manager_links import ManagerLinks
from hub.memory import reclaim
from hub.rollouts import Rollouts
from hub.stats import HubStats
from hub.store import HubStore, open_store

if TYPE_CHECKING:
    from backendai.events.sinks.runner import SinkRunner

log = structlog.get_logger(__name__)

GRACE = 2.0
LEAD_READY = 30.0  # seconds a leader waits for its rollouts to resume before announcing
EVENTS_POLL = 2.0  # seconds between looks at the shared history without a notification


class HubDaemon(DaemonLifecycle):
    def __init__(self, config: HubConfig, *, ready_file: Path | None = None,
                 version: str = "unknown") -> None:
        super().__init__()
        self.config = config
        self.version = version
        self.ready_file = ready_file
        self.port = 0
        self.events: EventLog | None = None
        self.http_port = 0

    async def run(self) -> None:
        started = time.monotonic()
        cfg = self.config
        lock = InstanceLock(cfg.state_dir / "hub.lock")
        store: HubStore | None = None
        links: ManagerLinks | None = None
        try:
            # the checks --check-config makes too (hub/preflight.py), in its order and words
            preflight.state_dir(cfg)
            lock.acquire()
            token, manager_token = preflight.tokens(cfg)
            admin = token.tokens[0] if token is not None and cfg.auth_token_file else None
            tls = ReloadableServerCredentials(cfg.tls) if cfg.tls else None
            self.secrets = Secrets([*(token.tokens if token else ()),
                                    *([manager_token] if manager_token is not admin else [])],
                                   tls, server=token)
            hub_id = cfg.ha.hub_id or local_hub_id(cfg.state_dir)
            preflight.database(cfg)
            store = await self._open_store()
            if store is None:
                return
            events = self._open_events(store)
            await events.open()
            sinks = self._make_sinks(events)  # as preflight.sinks builds them
            stats = HubStats()  # counts for /metrics (docs/METRICS.md)
            links = ManagerLinks(token=manager_token, tls=cfg.manager_tls,
                                 call_timeout=cfg.call_timeout,
                                 instrument=stats.instrument)
            inventory = Inventory(links, heartbeat_interval=cfg.heartbeat_interval,
                                  watch_connects=cfg.admission.watch_connects,
                                  contact_interval=cfg.contact_interval)
            static = [*cfg.hosts, *([cfg.self_host] if cfg.self_host else [])]
            for entry in static:
                inventory.add(entry)
            static_names = frozenset(e.name for e in static)
            hosts = HostSync(store, inventory, static_names)
            await hosts.full()
            leadership = Leadership(store, hub_id=hub_id, ttl=cfg.ha.lease_ttl,
                                    address=lambda: advertise_address(
                                        cfg.ha.advertise_address, cfg.grpc_listen, self.port))
            reachability = HostHistory(events, leadership, inventory)
            inventory.on_reachability = reachability.reachability
            fleet = Fleet(inventory=inventory, links=links, store=store,
                          static_names=static_names, leadership=leadership, events=events,
                          admission=Admission(cfg.admission))
            rollouts = Rollouts(store=store, links=links, inventory=inventory,
                                leadership=leadership, before_lead=hosts.full,
                                after_rollout=reclaim,
                                hub_host=cfg.self_host.name if cfg.self_host else None,
                                tick=cfg.tick_seconds, events=events)
            rollouts.note_observers.append(stats.rollout_notes)
            version = self.version
            servicer = HubServicer(version=version, inventory=inventory, fleet=fleet,
                                   rollouts=rollouts, leadership=leadership, events=events)
            server = GrpcServer(cfg.grpc_listen, token=token,
                                services=[(SERVICE_NAME, servicer.add_to)],
                                credentials=tls.credentials() if tls else None,
                                # the manager's health gate reads the version here, without
                                # a token (docs/SECURITY.md)
                                open_methods=("/backendai.v1.Hub/GetInfo",))
            web = HubHttp(cfg.http_listen, tokens=token, version=version,
                          inventory=inventory, fleet=fleet, rollouts=rollouts,
                          stats=stats, metrics_open=cfg.metrics_open, events=events,
                          ssl_context=tls.ssl_context() if tls is not None and cfg.http_tls
                          else None)
            http = web.server
            async with asyncio.TaskGroup() as tg:
                background = [tg.create_task(inventory.run(), name="inventory"),
                              tg.create_task(store.run(), name="store"),
                              tg.create_task(hosts.run(), name="hosts"),
                              tg.create_task(events.run(), name="events"),
                              tg.create_task(_follow_history(store, events),
                                             name="events-follow"),
                              tg.create_task(_sinks_while_leading(leadership, sinks),
                                             name="event-sinks"),
                              tg.create_task(reachability.run(), name="reachability"),
                              tg.create_task(web.feed.run(), name="fleet-feed")]
                events.emit("hub.started", f"hub/{hub_id}",
                            f"hub {self.version} started (pid {os.getpid()})",
                            {"pid": os.getpid(), "version": self.version})
                runs = tg.create_task(rollouts.run(), name="rollouts")
                lead: asyncio.Task[None] | None = None
                try:
                    _, self.port = await server.start()
                    _, self.http_port = await http.start()
                    servicer.http_address = f"{cfg.http_listen.host}:{self.http_port}"
                    servicer.http_scheme = "https" if cfg.http_tls else "http"
                    with contextlib.suppress(StoreUnavailable):  # the loop retries
                        await leadership.try_acquire()
                    lead = tg.create_task(leadership.run(), name="leadership")
                    if leadership.term is not None:
                        await rollouts.wait_leading(LEAD_READY)
                    self._announce(started, version, leadership)
                    await self._stop.wait()
                    log.info("hub.stopping")
                finally:
                    await server.not_serving()
                    await http.stop(GRACE)
                    await server.stop(GRACE)
                    await _cancel(lead, runs)  # runners stop: their state is stored
                    await leadership.release()
                    events.emit("hub.stopped", f"hub/{hub_id}", "hub stopped",
                                {"pid": os.getpid()})
                    await _cancel(*background)
        finally:
            if links is not None:
                await links.close()
            if self.events is not None:
                await self.events.close()
            if store is not None:
                await store.close()
            lock.release()
            self._done.set()
            log.info("hub.stopped")

    def _open_events(self, store: HubStore) -> EventLog:
        """The hub's event history, in its store (SQLite or PostgreSQL)."""
        cfg = self.config.events
        events = self.events = EventLog(
            store.history, retention=Retention(cfg.retention_count, cfg.retention_days),
            source=cfg.source)
        store.attach_events(events)
        return events

    def _make_sinks(self, events: EventLog) -> list[SinkRunner]:
        if not self.config.event_sinks:
            return []
        from backendai.events.sinks.runner import SinkRunner, make_sink  # noqa: PLC0415

        return [SinkRunner(events, make_sink(c, source=events.source), c)
                for c in self.config.event_sinks]

    async def _open_store(self) -> HubStore | None:
        """The configured store; None when asked to stop while waiting for the database."""
        opening = asyncio.ensure_future(open_store(self.config))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
        return opening.result() if not opening.cancelled() else None

    def _announce(self, started: float, version: str, leadership: Leadership) -> None:
        cfg = self.config
        info = {"pid": os.getpid(), "grpc": f"{cfg.grpc_listen.host}:{self.port}",
                "grpc_port": self.port, "version": version, "state_dir": str(cfg.state_dir),
                "hub_id": leadership.hub_id, "leader": leadership.leading,
                "store_backend": cfg.store.backend,
                "http": f"{cfg.http_listen.host}:{self.http_port}", "http_port": self.http_port,
                "http_scheme": "https" if cfg.http_tls else "http"}
        if self.ready_file is not None:
            write_ready_file(self.ready_file, info)
        log.info("hub.ready", startup_seconds=round(time.monotonic() - started, 3),
                 **{k: v for k, v in info.items() if k != "pid"})


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks and wait for each to finish."""
    for task in tasks:
        if task is not None:
            task.cancel()
    for task in tasks:
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _follow_history(store: HubStore, events: EventLog) -> None:
    """Events other hubs write to a shared database wake this hub's watchers and sinks
    (PostgreSQL: NOTIFY; at least every EVENTS_POLL seconds)."""
    feed = store.event_changes
    while True:
        generation = feed.generation
        await feed.wait_past(generation, EVENTS_POLL)
        with contextlib.suppress(StoreUnavailable):
            await events.refresh()


async def _sinks_while_leading(leadership: Leadership, sinks: list[SinkRunner]) -> None:
    """The leader delivers the history to the sinks (one cursor per sink in the shared
    database: a new leader resumes where the last one stopped)."""
    if not sinks:
        return
    while True:
        term = await leadership.next_term()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.run(), name=f"sink-{s.name}") for s in sinks]
            await term.ended.wait()
            # a delivery in flight may end and store its cursor (the next leader then
            # resumes past it); nothing new starts
            for runner, task in zip(sinks, tasks, strict=True):
                await runner.stop(task, GRACE)
