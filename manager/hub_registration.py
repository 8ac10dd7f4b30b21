"""The manager registers its host with a hub (`[hub]` in the config), so hosts join the
fleet without an entry in the hub's static inventory (DESIGN.md: "a static file plus
managers that register").

Register(role "manager", the address the hub should dial, labels) at start, retried
with exponential backoff and full jitter until the hub answers (a fleet of managers
that lost a restarting hub comes back spread out), then again every
`register_interval` (±10 %), so a hub that lost its state learns the host back: the
loop every registration shares (backendai/registration_loop.py). A busy hub's "later"
(its admission control) is waited out as asked. The hub watches the
manager itself (WatchStatus) once it knows the address: no heartbeat here.

With several hubs (`[hub] addresses`) it registers with the leading one, moving on when
a hub is down or answers as a follower (backendai/hub_endpoints.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import structlog

from backendai.auth import Token
from backendai.hub_endpoints import HubEndpoints, retry_after
from backendai.registration_loop import Later, keep_trying
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import hub_pb2_grpc as pb_grpc
from manager.config import HubLink

log = structlog.get_logger(__name__)

CALL_TIMEOUT = 10.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0


class HubRegistration:
    def __init__(self, link: HubLink, *, token: Token | None,
                 manager_address: Callable[[], str], version: Callable[[], str]) -> None:
        """manager_address(): the address to advertise (known once the port is bound);
        version(): the primary service's version now."""
        self.link = link
        self.token = token
        self.manager_address = manager_address
        self.version = version
        self.registered = False
        self.failures = 0  # in a row, for the log
        self.hub = HubEndpoints(link.hubs, token=token, tls=link.tls)

    async def run(self) -> None:
        interval = self.link.register_interval
        try:
            await keep_trying(lambda: self._register(self.hub.stub()),
                              interval=lambda: interval, base=lambda: BACKOFF_BASE,
                              cap=lambda: min(BACKOFF_CAP, interval))
        finally:
            await self.hub.close()

    async def _register(self, stub: pb_grpc.HubStub) -> bool | Later:
        address = self.link.advertise_address or self.manager_address()
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                resp = await stub.Register(pb.RegisterRequest(
                    name=self.link.name, role="manager", manager_address=address,
                    labels=dict(self.link.labels), version=self.version()))
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            wait = retry_after(exc)
            if wait is not None:  # the hub admits registrations at a bounded rate
                log.info("manager.hub_busy", hub=self.hub.current, retry_in=round(wait, 2))
                return Later(wait)
            self.failures += 1
            reason = f"{exc.code().name}: {exc.details()}" \
                if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("manager.register_failed", hub=self.hub.current, reason=reason,
                        attempt=self.failures)
            self.registered = False
            await self.hub.failed(exc)
            return False
        if not self.registered:
            log.info("manager.registered", hub=self.hub.current, name=resp.name,
                     address=address)
        self.registered = True
        self.failures = 0
        return True
