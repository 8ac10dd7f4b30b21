"""The hub daemon's lifecycle: run() returns only when fully stopped; shutdown() is
idempotent. Graceful stop order: health NOT_SERVING, HTTP and gRPC stop with grace, then
the rollout runners (their state is already on disk) and the inventory watchers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import structlog

from backendai.auth import Token, Tokens
from backendai.daemon_support import DaemonLifecycle, InstanceLock, Secrets, write_ready_file
from backendai.grpc_server import GrpcServer
from backendai.tls import ReloadableServerCredentials
from hub.config import HubConfig
from hub.fleet import Fleet
from hub.grpc_api import SERVICE_NAME, HubServicer
from hub.http_app import HubHttp
from hub.inventory import Inventory
from hub.manager_links import ManagerLinks
from hub.rollouts import Rollouts
from hub.stats import HubStats
from hub.store import HubStore

log = structlog.get_logger(__name__)

GRACE = 2.0


class HubDaemon(DaemonLifecycle):
    def __init__(self, config: HubConfig, *, ready_file: Path | None = None,
                 version: str = "unknown") -> None:
        super().__init__()
        self.config = config
        self.version = version
        self.ready_file = ready_file
        self.port = 0
        self.http_port = 0

    async def run(self) -> None:
        started = time.monotonic()
        cfg = self.config
        lock = InstanceLock(cfg.state_dir / "hub.lock")
        store: HubStore | None = None
        links: ManagerLinks | None = None
        try:
            lock.acquire()
            # callers' tokens (auth_token_file: the admin named "default"; [[auth_tokens]])
            token = Tokens.load(cfg.auth_token_file, cfg.auth_tokens)
            admin = token.tokens[0] if token is not None and cfg.auth_token_file else None
            manager_token = Token.from_file(cfg.manager_token_file, "manager_token_file") \
                if cfg.manager_token_file else admin
            tls = ReloadableServerCredentials(cfg.tls) if cfg.tls else None
            self.secrets = Secrets([*(token.tokens if token else ()),
                                    *([manager_token] if manager_token is not admin else [])],
                                   tls)
            store = HubStore(cfg.state_dir / "hub.db")
            stats = HubStats()  # counts for /metrics (docs/METRICS.md)
            links = ManagerLinks(token=manager_token, tls=cfg.manager_tls,
                                 call_timeout=cfg.call_timeout,
                                 interceptors=stats.interceptors())
            inventory = Inventory(links, heartbeat_interval=cfg.heartbeat_interval)
            static = [*cfg.hosts, *([cfg.self_host] if cfg.self_host else [])]
            for entry in static:
                inventory.add(entry)
            static_names = frozenset(e.name for e in static)
            for entry in store.registered_hosts():
                if entry.name not in static_names:
                    inventory.add(entry)
            fleet = Fleet(inventory=inventory, links=links, store=store,
                          static_names=static_names)
            rollouts = Rollouts(store=store, links=links, inventory=inventory,
                                hub_host=cfg.self_host.name if cfg.self_host else None,
                                tick=cfg.tick_seconds)
            rollouts.note_observers.append(stats.rollout_notes)
            version = self.version
            servicer = HubServicer(version=version, inventory=inventory, fleet=fleet,
                                   rollouts=rollouts)
            server = GrpcServer(cfg.grpc_listen, token=token,
                                services=[(SERVICE_NAME, servicer.add_to)],
                                credentials=tls.credentials() if tls else None,
                                # the manager's health gate reads the version here, without
                                # a token (docs/SECURITY.md)
                                open_methods=("/backendai.v1.Hub/GetInfo",))
            web = HubHttp(cfg.http_listen, tokens=token, version=version,
                          inventory=inventory, fleet=fleet, rollouts=rollouts,
                          stats=stats, metrics_open=cfg.metrics_open)
            http = web.server
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(inventory.run(), name="inventory")
                runs = tg.create_task(rollouts.run(), name="rollouts")
                feed = tg.create_task(web.feed.run(), name="fleet-feed")
                try:
                    _, self.port = await server.start()
                    _, self.http_port = await http.start()
                    servicer.http_address = f"{cfg.http_listen.host}:{self.http_port}"
                    self._announce(started, version)
                    await self._stop.wait()
                    log.info("hub.stopping")
                finally:
                    await server.not_serving()
                    await http.stop(GRACE)
                    await server.stop(GRACE)
                    for task in (feed, runs, watch):
                        task.cancel()
                    for task in (feed, runs, watch):
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            if links is not None:
                await links.close()
            if store is not None:
                store.close()
            lock.release()
            self._done.set()
            log.info("hub.stopped")

    def _announce(self, started: float, version: str) -> None:
        cfg = self.config
        info = {"pid": os.getpid(), "grpc": f"{cfg.grpc_listen.host}:{self.port}",
                "grpc_port": self.port, "version": version, "state_dir": str(cfg.state_dir),
                "http": f"{cfg.http_listen.host}:{self.http_port}", "http_port": self.http_port}
        if self.ready_file is not None:
            write_ready_file(self.ready_file, info)
        log.info("hub.ready", startup_seconds=round(time.monotonic() - started, 3),
                 **{k: v for k, v in info.items() if k != "pid"})
