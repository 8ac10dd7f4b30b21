"""The hub daemon's lifecycle: run() returns only when fully stopped; shutdown() is
idempotent. Graceful stop order: health NOT_SERVING, gRPC stop with grace, then the
rollout runners (their state is already stored), the lease (released, so another hub
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

import structlog

from backendai.auth import Token
from backendai.daemon_support import DaemonLifecycle, InstanceLock, Secrets, write_ready_file
from backendai.errors import StoreUnavailable
from backendai.grpc_server import GrpcServer
from backendai.tls import ReloadableServerCredentials
from hub.admission import Admission
from hub.config import HubConfig
from hub.fleet import Fleet
from hub.grpc_api import SERVICE_NAME, HubServicer
from hub.host_sync import HostSync
from hub.identity import advertise_address, local_hub_id
from hub.inventory import Inventory
from hub.leadership import Leadership
from hub.manager_links import ManagerLinks
from hub.memory import reclaim
from hub.rollouts import Rollouts
from hub.store import HubStore, open_store

log = structlog.get_logger(__name__)

GRACE = 2.0
LEAD_READY = 30.0  # seconds a leader waits for its rollouts to resume before announcing


class HubDaemon(DaemonLifecycle):
    def __init__(self, config: HubConfig, *, ready_file: Path | None = None,
                 version: str = "unknown") -> None:
        super().__init__()
        self.config = config
        self.version = version
        self.ready_file = ready_file
        self.port = 0

    async def run(self) -> None:
        started = time.monotonic()
        cfg = self.config
        lock = InstanceLock(cfg.state_dir / "hub.lock")
        store: HubStore | None = None
        links: ManagerLinks | None = None
        try:
            lock.acquire()
            token = Token.from_file(cfg.auth_token_file) if cfg.auth_token_file else None
            manager_token = Token.from_file(cfg.manager_token_file, "manager_token_file") \
                if cfg.manager_token_file else token
            tls = ReloadableServerCredentials(cfg.tls) if cfg.tls else None
            self.secrets = Secrets([token, *([manager_token] if manager_token is not token
                                             else [])], tls)
            hub_id = cfg.ha.hub_id or local_hub_id(cfg.state_dir)
            store = await self._open_store()
            if store is None:
                return
            links = ManagerLinks(token=manager_token, tls=cfg.manager_tls,
                                 call_timeout=cfg.call_timeout)
            inventory = Inventory(links, heartbeat_interval=cfg.heartbeat_interval,
                                  watch_connects=cfg.admission.watch_connects)
            static = [*cfg.hosts, *([cfg.self_host] if cfg.self_host else [])]
            for entry in static:
                inventory.add(entry)
            static_names = frozenset(e.name for e in static)
            hosts = HostSync(store, inventory, static_names)
            await hosts.full()
            leadership = Leadership(store, hub_id=hub_id, ttl=cfg.ha.lease_ttl,
                                    address=lambda: advertise_address(
                                        cfg.ha.advertise_address, cfg.grpc_listen, self.port))
            fleet = Fleet(inventory=inventory, links=links, store=store,
                          static_names=static_names, leadership=leadership,
                          admission=Admission(cfg.admission))
            rollouts = Rollouts(store=store, links=links, inventory=inventory,
                                leadership=leadership, before_lead=hosts.full,
                                after_rollout=reclaim,
                                hub_host=cfg.self_host.name if cfg.self_host else None,
                                tick=cfg.tick_seconds)
            version = self.version
            servicer = HubServicer(version=version, inventory=inventory, fleet=fleet,
                                   rollouts=rollouts, leadership=leadership)
            server = GrpcServer(cfg.grpc_listen, token=token,
                                services=[(SERVICE_NAME, servicer.add_to)],
                                credentials=tls.credentials() if tls else None,
                                # the manager's health gate reads the version here, without
                                # a token (docs/SECURITY.md)
                                open_methods=("/backendai.v1.Hub/GetInfo",))
            async with asyncio.TaskGroup() as tg:
                background = [tg.create_task(inventory.run(), name="inventory"),
                              tg.create_task(store.run(), name="store"),
                              tg.create_task(hosts.run(), name="hosts")]
                runs = tg.create_task(rollouts.run(), name="rollouts")
                lead: asyncio.Task[None] | None = None
                try:
                    _, self.port = await server.start()
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
                    await server.stop(GRACE)
                    await _cancel(lead, runs)  # runners stop: their state is stored
                    await leadership.release()
                    await _cancel(*background)
        finally:
            if links is not None:
                await links.close()
            if store is not None:
                await store.close()
            lock.release()
            self._done.set()
            log.info("hub.stopped")

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
                "store_backend": cfg.store.backend}
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
