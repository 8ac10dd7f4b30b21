"""Fleet operations: agents and managers registering and heartbeating, and fan-out to
the managers (status of many hosts, start / stop / restart a service, follow a host's
logs).

Registrations, heartbeats and service start / stop / restart go to the leading hub (a
follower answers NotLeader naming it, and the agents and managers move there): the
agents' live state is kept where rollouts run. Status fan-out and log streams are reads
any hub serves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from backendai.deadlines import step_deadline
from backendai.errors import DeadlineExceeded, InvalidArgument, NotFound
from backendai.events.audit import Caller, acting, audited
from backendai.events.model import Event, cut, make_event
from backendai.grpc_handlers import ON_BEHALF_OF
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from backendai.validate import (
    check_address,
    check_host_name,
    check_labels,
    check_service_name,
)
from hub.admission import Admission
from hub.config import HostEntry
from hub.inventory import HostView, Inventory
from hub.leadership import Leadership
from hub.manager_links import ManagerLinks, describe
from hub.store import HubStore

if TYPE_CHECKING:
    from backendai.events.log import EventLog

MAX_FANOUT = 64
MAX_TAIL = 100_000
MAX_STOP_TIMEOUT = 3600.0  # as the manager's


def registered(entry: HostEntry, before: HostEntry | None, peer: str) -> Event:
    """The `host.registered` event of a registration that is new or changes the host."""
    what = "registered" if before is None else "registered again, changed"
    return make_event("host.registered", f"host/{entry.name}",
                      f"{entry.name} {what}: manager at {entry.manager_address}", {
                          "manager_address": entry.manager_address,
                          "previous_address": before.manager_address if before else None,
                          "labels": ",".join(f"{k}={v}" for k, v in
                                             sorted(entry.labels.items())) or None,
                          "role": entry.role, "from": peer or None}, at=time.time())


WILDCARDS = ("0.0.0.0", "[::]", "::")  # noqa: S104 - recognising, not binding


def advertised_address(address: str, peer: str) -> str:
    """`address` with a wildcard host replaced by the peer's IP (gRPC peer strings are
    "ipv4:IP:PORT" or "ipv6:[IP]:PORT"); unchanged when there is nothing to replace."""
    host, _, port = address.rpartition(":")
    if host not in WILDCARDS or not peer.startswith(("ipv4:", "ipv6:")):
        return address
    ip = peer.split(":", 1)[1].rpartition(":")[0]
    return f"{ip}:{port}" if ip else address


def host_subject(fleet: Fleet, host: object = "", *args: object, **kwargs: object) -> str:
    """What an audited action on a host's service is about: `host/NAME`."""
    return f"host/{cut(str(host), 64)}"


def _service_asked(fleet: Fleet, host: object = "", service: object = "", *args: object,
                   **kwargs: object) -> dict[str, object]:
    return {"service": cut(str(service), 64) or None}


def relayed(who: Caller | None) -> tuple[tuple[str, str], ...]:
    """Call metadata naming the operator a manager call is made for (its audit says
    "hub for OPERATOR")."""
    return ((ON_BEHALF_OF, who.actor),) if who is not None else ()


class Fleet:
    def __init__(self, *, inventory: Inventory, links: ManagerLinks, store: HubStore,
                 static_names: frozenset[str], leadership: Leadership,
                 admission: Admission | None = None,
                 events: EventLog | None = None) -> None:
        """admission: the rate Register and Heartbeat are let in at (hub/admission.py);
        None: no limit. events: the audit trail's log."""
        self.inventory = inventory
        self.links = links
        self.store = store
        self.static_names = static_names
        self.leadership = leadership
        self.admission = admission
        self.events = events  # audit (backendai/events/audit.py)

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
            await self.store.save_host(entry, time.time(), [registered(
                entry, known.entry if known else None, peer)])
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

    @audited("restart", host_subject, request=_service_asked)
    async def restart(self, host: str, service: str, *, force: bool = False,
                      ) -> mpb.ServiceStatus:
        view, service = self._target(host, service, "RestartService")
        stub = self.links.stub(view.entry.manager_address)
        step = f"restart of {service or 'the service'} on host {view.name}"
        async with step_deadline(step, self.links.call_timeout * 3):
            result: mpb.ServiceStatus = await stub.Restart(
                mpb.RestartRequest(service=service, force=force), metadata=relayed(acting()))
        return result

    @audited("start", host_subject, request=_service_asked)
    async def start(self, host: str, service: str, *, force: bool = False,
                    ) -> mpb.ServiceStatus:
        view, service = self._target(host, service, "StartService")
        stub = self.links.stub(view.entry.manager_address)
        step = f"start of {service or 'the service'} on host {view.name}"
        async with step_deadline(step, self.links.call_timeout * 3):
            result: mpb.ServiceStatus = await stub.Start(
                mpb.StartRequest(service=service, force=force), metadata=relayed(acting()))
        return result

    @audited("stop", host_subject, request=_service_asked)
    async def stop(self, host: str, service: str, *, timeout: float = 0.0,
                   force: bool = False) -> mpb.ServiceStatus:
        """timeout: seconds the manager waits for the service to exit (0: its
        configured stop_timeout); the hub's own deadline covers that wait."""
        if not math.isfinite(timeout) or not 0 <= timeout <= MAX_STOP_TIMEOUT:
            raise InvalidArgument(f"timeout_seconds: must be 0-{MAX_STOP_TIMEOUT:g}")
        view, service = self._target(host, service, "StopService")
        stub = self.links.stub(view.entry.manager_address)
        step = f"stop of {service or 'the service'} on host {view.name}"
        async with step_deadline(step, self.links.call_timeout * 3 + timeout):
            result: mpb.ServiceStatus = await stub.Stop(
                mpb.StopRequest(service=service, timeout_seconds=timeout, force=force),
                metadata=relayed(acting()))
        return result

    def _target(self, host: str, service: str, what: str) -> tuple[HostView, str]:
        """The host's view and the service a lifecycle request names ("": the host's
        configured service, else the manager's primary); a bad name is refused here,
        before anything is sent, and a follower refuses (NotLeader naming the leader)."""
        view = self.inventory.get(check_host_name(host, "host"))
        if service:
            check_service_name(service, "service")
        self.leadership.require(what)
        return view, service or view.entry.service

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
