"""The agent daemon's lifecycle: serve backendai.v1.Agent (+ health, reflection) and keep
registered with the hub. run() returns only when fully stopped; shutdown() is idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import structlog

from agent import preflight
from agent.config import AgentConfig
from agent.facts import read_facts
from agent.grpc_api import SERVICE_NAME, AgentServicer
from agent.registration import Registration
from backendai.daemon_support import DaemonLifecycle, Secrets, write_ready_file
from backendai.grpc_server import GrpcServer
from backendai.tls import ReloadableServerCredentials
from backendai.v1 import agent_pb2 as pb

log = structlog.get_logger(__name__)

GRACE = 2.0
FACTS_TTL = 1.0


class AgentDaemon(DaemonLifecycle):
    def __init__(self, config: AgentConfig, *, version: str,
                 ready_file: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.version = version
        self.ready_file = ready_file
        self.port = 0
        self._facts: tuple[float, pb.HostFacts] | None = None

    async def facts(self) -> pb.HostFacts:
        """Host facts, cached for a second (reads /proc in a thread)."""
        now = time.monotonic()
        if self._facts is None or now - self._facts[0] > FACTS_TTL:
            self._facts = (now, await asyncio.to_thread(read_facts, self.config.disk_path))
        return self._facts[1]

    async def run(self) -> None:
        cfg = self.config
        started = time.time()
        try:
            token, hub_token = preflight.tokens(cfg)  # as --check-config checks them
            tls = ReloadableServerCredentials(cfg.tls) if cfg.tls else None
            self.secrets = Secrets([token, hub_token], tls)
            registration = Registration(cfg, token=hub_token, version=self.version,
                                        facts=self.facts, started=started) \
                if cfg.hub_address else None
            servicer = AgentServicer(name=cfg.name, version=self.version,
                                     hub_address=",".join(cfg.hub_address), started=started,
                                     facts=self.facts, registration=registration)
            server = GrpcServer(cfg.grpc_listen, token=token,
                                services=[(SERVICE_NAME, servicer.add_to)],
                                credentials=tls.credentials() if tls else None,
                                # the manager's health gate reads the version here, without
                                # a token (docs/SECURITY.md)
                                open_methods=("/backendai.v1.Agent/GetInfo",))
            async with asyncio.TaskGroup() as tg:
                reg_task: asyncio.Task[None] | None = None
                try:
                    host, self.port = await server.start()
                    if registration is not None:
                        if not registration.advertise:
                            # a wildcard host is replaced by the hub with the address it
                            # sees the registration come from
                            bracketed = f"[{host}]" if ":" in host else host
                            registration.advertise = f"{bracketed}:{self.port}"
                        reg_task = tg.create_task(registration.run(), name="registration")
                    self._announce(started)
                    await self._stop.wait()
                    log.info("agent.stopping")
                finally:
                    await server.not_serving()
                    await server.stop(GRACE)
                    if reg_task is not None:
                        reg_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reg_task
        finally:
            self._done.set()
            log.info("agent.stopped")

    def _announce(self, started: float) -> None:
        cfg = self.config
        info = {"pid": os.getpid(), "grpc": f"{cfg.grpc_listen.host}:{self.port}",
                "grpc_port": self.port, "name": cfg.name, "version": self.version}
        if self.ready_file is not None:
            write_ready_file(self.ready_file, info)
        log.info("agent.ready", startup_seconds=round(time.time() - started, 3),
                 **{k: v for k, v in info.items() if k != "pid"})
