"""Registration with the hub and the heartbeat loop: register, then heartbeat every
interval the hub asks for (±10% jitter); on a failure reconnect with exponential backoff
and full jitter, the first window one heartbeat interval. The loop is the one every
registration shares (backendai/registration_loop.py); each attempt here is a Register
(when not registered, or when the hub asks for it again) or a Heartbeat.

With several hub addresses the agent talks to one at a time and moves on when that one
is down or is a follower (backendai/hub_endpoints.py): registrations and heartbeats go
to the leading hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog

from agent.config import AgentConfig
from backendai.auth import Token
from backendai.hub_endpoints import HubEndpoints, retry_after
from backendai.registration_loop import Later, keep_trying
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import hub_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

BACKOFF_BASE = 0.5
CALL_TIMEOUT = 10.0


class Registration:
    def __init__(self, cfg: AgentConfig, *, token: bytes | Token | None, version: str,
                 facts: Callable[[], Awaitable[apb.HostFacts]], started: float) -> None:
        self.cfg = cfg
        self.token = token
        self.version = version
        self.facts = facts
        self.started = started
        self.advertise = cfg.advertise_address
        self.registered = False
        self.last_heartbeat = 0.0
        self.interval = cfg.heartbeat_interval
        self.hub = HubEndpoints(cfg.hub_address, token=token, tls=cfg.hub_tls)

    def _backoff_base(self) -> float:
        # the first window is a heartbeat interval: agents that all lost a restarting
        # hub come back spread over the time they would have heartbeated anyway, then
        # the window doubles up to reconnect_max
        return max(BACKOFF_BASE, min(self.interval, self.cfg.reconnect_max))

    async def run(self) -> None:
        try:
            await keep_trying(lambda: self._attempt(self.hub.stub()),
                              interval=lambda: self.interval, base=self._backoff_base,
                              cap=lambda: self.cfg.reconnect_max)
        finally:
            await self.hub.close()

    async def _attempt(self, stub: pb_grpc.HubStub) -> bool | Later:
        """Heartbeat when registered, else register (also when the hub asks to register
        again); False when the hub could not be reached or refused; Later when the hub
        admits callers at a bounded rate and asks this one to come back (a registered
        agent stays registered: its next heartbeat is just later)."""
        try:
            if self.registered:
                async with asyncio.timeout(CALL_TIMEOUT):
                    hb = await stub.Heartbeat(pb.HeartbeatRequest(
                        name=self.cfg.name, version=self.version,
                        uptime_seconds=time.time() - self.started, facts=await self.facts()))
                if not hb.reregister:
                    self._beat(hb.heartbeat_interval_seconds)
                    return True
                log.info("agent.reregister", hub=self.hub.current)
            await self._register(stub)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            wait = retry_after(exc)
            if wait is not None:
                log.info("agent.hub_busy", hub=self.hub.current, retry_in=round(wait, 2),
                         registered=self.registered)
                return Later(wait)
            reason = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            if self.registered:
                log.warning("agent.hub_lost", hub=self.hub.current, reason=reason)
            self.registered = False
            was = self.hub.current
            if await self.hub.failed(exc):
                log.info("agent.hub_next", hub=self.hub.current, previous=was, reason=reason)
            return False
        return True

    async def _register(self, stub: pb_grpc.HubStub) -> None:
        async with asyncio.timeout(CALL_TIMEOUT):
            resp = await stub.Register(pb.RegisterRequest(
                name=self.cfg.name, role="agent", manager_address=self.cfg.manager_address,
                agent_address=self.advertise, labels=self.cfg.labels, version=self.version,
                facts=await self.facts()))
        self._beat(resp.heartbeat_interval_seconds)
        log.info("agent.registered", hub=self.hub.current, name=resp.name,
                 interval=self.interval)

    def _beat(self, interval: float) -> None:
        self.registered = True
        self.last_heartbeat = time.time()
        if 0.05 <= interval <= 3600:
            self.interval = interval
