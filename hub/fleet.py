"""Fleet operations: agents and managers registering and heartbeating, and fan-out to
the managers (status of many hosts, restart a service, follow a host's logs).

Registrations, heartbeats and restarts go to the leading hub (a follower answers
NotLeader naming it, and the agents and managers move there): the agents' live state is
kept where rollouts run. Status fan-out and log streams are reads any hub serves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import grpc

from backendai.deadlines import step_deadline
from backendai.errors import DeadlineExceeded, InvalidArgument, NotFound
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from backendai.validate import check_address, check_host_name, check_labels
from hub.admission import Admission
from hub.config import HostEntry
from hub.inventory import Inventory
from hub.leadership import Leadership
from hub.manager_links import ManagerLinks, describe
from hub.store import HubStore

MAX_FANOUT = 64
MAX_TAIL = 100_000


WILDCARDS = ("0.0.0.0", "[::]", "::")  # noqa: S104 - recognising, not binding


def advertised_address(address: str, peer: str) -> str:
    """`address` with a wildcard host replaced by the peer's IP (gRPC peer strings are
    "ipv4:IP:PORT" or "ipv6:[IP]:PORT"); unchanged when there is nothing to replace."""
    host, _, port = address.rpartition(":")
    if host not in WILDCARDS or not peer.startswith(("ipv4:", "ipv6:")):
        return address
    ip = peer.split(":", 1)[1].rpartition(":")[0]
    return f"{ip}:{port}" if ip else address


class Fleet:
    def __init__(self, *, inventory: Inventory, links: ManagerLinks, store: HubStore,
                 static_names: frozenset[str], leadership: Leadership,
                 admission: Admission | None = None) -> None:
        """admission: the rate Register and Heartbeat are let in at (hub/admission.py);
        None: no limit."""
        self.inventory = inventory
        self.links = links
        self.store = store
        self.static_names = static_names
        self.leadership = leadership
        self.admission = admission

    # ---------------------------------------------------------------- registration

    async def register(self, req: pb.RegisterRequest, peer: str = "") -> pb.RegisterResponse:
        """peer: the caller as gRPC names it ("ipv4:10.0.0.5:53211"); it replaces a
        wildcard host in the agent's address ("0.0.0.0:3080" -> "10.0.0.5:3080")."""
        name = check_host_name(req.name, "name")
        if req.role not in ("agent", "manager"):
            raise InvalidArgument(f"role: expected \"agent\" or \"manager\", got {req.role[:40]!r}")
        labels = check_labels(dict(req.labels), "labels")
        manager = advertised_address(check_address(req.manager_address, "manager_address"),
                                     peer) if req.manager_address else ""
        agent = check_address(req.agent_address, "agent_address") if req.agent_address else ""
        agent = advertised_address(agent, peer)
        self.leadership.require("Register")
        known = self.inventory.hosts.get(name)
        if known is None and not manager:
            raise InvalidArgument("manager_address: required for a host the hub does not "
                                  "know yet")
        entry = None
        if name not in self.static_names and manager:
            # the static inventory wins over registration for the hosts it names
            entry = HostEntry(name=name, manager_address=manager, labels=labels,
                              service=known.entry.service if known else "",
                              role=known.entry.role if known else "agent", source="registered")
            if known is not None and known.entry == entry:
                entry = None  # as known (the store has it): nothing to write
        if self.admission is not None:
            # a registration that writes the store is admitted at its own rate; one that
            # changes nothing (a fleet coming back to a restarted or new leader, the
            # managers' periodic re-registration) costs what a heartbeat does
            self.admission.admit("register" if entry is not None else "heartbeat")
        if entry is not None:
            await self.store.save_host(entry, time.time())
            self.inventory.add(entry)
        view = self.inventory.get(name)
        if req.role == "agent":
            view.agent_address = agent or view.agent_address
            self._beat(view.name, req.version, req.facts if req.HasField("facts") else None)
        return pb.RegisterResponse(name=name,
                                   heartbeat_interval_seconds=self.inventory.heartbeat_interval)

    def heartbeat(self, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        name = check_host_name(req.name, "name")
        self.leadership.require("Heartbeat")
        if self.admission is not None:
            self.admission.admit("heartbeat")
        interval = self.inventory.heartbeat_interval
        if name not in self.inventory.hosts:
            return pb.HeartbeatResponse(heartbeat_interval_seconds=interval, reregister=True)
        self._beat(name, req.version, req.facts if req.HasField("facts") else None)
        return pb.HeartbeatResponse(heartbeat_interval_seconds=interval)

    def _beat(self, name: str, version: str, facts: apb.HostFacts | None) -> None:
        view = self.inventory.get(name)
        view.agent_heartbeat = time.time()
        if version:
            view.agent_version = version[:64]
        if facts is not None:
            view.facts = facts

    # ---------------------------------------------------------------- fan-out

    async def host_status(self, names: list[str], timeout: float) -> pb.HostStatusResponse:
        if not math.isfinite(timeout) or timeout < 0 or timeout > 60:
            raise InvalidArgument("timeout_seconds: must be 0-60")
        views = [self.inventory.get(n) for n in names] if names else \
            sorted(self.inventory.hosts.values(), key=lambda v: v.name)
        limit = asyncio.Semaphore(MAX_FANOUT)

        async def one(address: str, name: str, service: str) -> pb.HostServices:
            async with limit:
                try:
                    async with step_deadline(f"status of host {name}", timeout or 5.0):
                        resp = await self.links.stub(address).ListServices(
                            mpb.ListServicesRequest())
                except grpc.aio.AioRpcError as exc:
                    return pb.HostServices(host=name, reachable=False, error=describe(exc))
                except DeadlineExceeded as exc:
                    return pb.HostServices(host=name, reachable=False,
                                           error=f"DEADLINE_EXCEEDED: {exc}")
                return pb.HostServices(host=name, reachable=True, services=resp.services)

        results = await asyncio.gather(*(one(v.entry.manager_address, v.name, v.entry.service)
                                         for v in views))
        return pb.HostStatusResponse(hosts=results)

    async def restart(self, host: str, service: str) -> mpb.ServiceStatus:
        view = self.inventory.get(check_host_name(host, "host"))
        self.leadership.require("RestartService")
        service = service or view.entry.service
        step = f"restart of {service or 'the service'} on host {view.name}"
        async with step_deadline(step, self.links.call_timeout * 3):
            result: mpb.ServiceStatus = await self.links.stub(
                view.entry.manager_address).Restart(mpb.RestartRequest(service=service))
        return result

    async def logs(self, req: pb.StreamHostLogsRequest) -> AsyncIterator[mpb.LogBatch]:
        if req.tail_lines > MAX_TAIL:
            raise InvalidArgument(f"tail_lines: at most {MAX_TAIL}")
        try:
            view = self.inventory.get(check_host_name(req.host, "host"))
        except InvalidArgument:
            raise NotFound(f"host {req.host[:80]!r}: not in the inventory") from None
        call = self.links.stub(view.entry.manager_address).StreamLogs(
            mpb.StreamLogsRequest(service=req.service or view.entry.service,
                                  tail_lines=req.tail_lines, no_follow=req.no_follow))
        try:
            async for batch in call:
                yield batch
        finally:
            call.cancel()
