"""backendai.v1.Hub over gRPC: translates messages to the fleet and rollout services."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from backendai.errors import InvalidArgument, StoreUnavailable, Unimplemented
from backendai.events import wire as event_wire
from backendai.grpc_handlers import stream, unary
from backendai.v1 import events_pb2 as epb
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import hub_pb2_grpc as pb_grpc
from backendai.v1 import manager_pb2 as mpb
from hub import pb_convert as conv
from hub.events_fanout import list_host_events, watch_host_events
from hub.fleet import Fleet
from hub.inventory import Inventory
from hub.leadership import Leadership
from hub.rollouts import Rollouts

if TYPE_CHECKING:
    from backendai.events.log import EventLog

SERVICE_NAME = "backendai.v1.Hub"
MAX_ID = 100
MAX_INDEX = 2**62
INFO_STORE_TIMEOUT = 1.0  # GetInfo answers without the active rollout past this


def _id(value: str) -> str:
    if len(value) > MAX_ID or not value.isprintable():
        raise InvalidArgument("id: not a rollout id")
    return value


class HubServicer(pb_grpc.HubServicer):
    def __init__(self, *, version: str, inventory: Inventory, fleet: Fleet,
                 rollouts: Rollouts, leadership: Leadership,
                 events: EventLog | None = None) -> None:
        self.events = events
        self.version = version
        self.inventory = inventory
        self.fleet = fleet
        self.rollouts = rollouts
        self.leadership = leadership
        self.started = time.time()
        self.hostname = socket.gethostname()
        self.http_address = ""  # the HTTP listener, once bound
        self.http_scheme = "http"  # "https" with http_tls

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_HubServicer_to_server(self, server)

    @unary
    async def GetInfo(self, request: pb.HubInfoRequest, context: Any) -> pb.HubInfo:
        try:  # the version must answer even while the database is away (health gates)
            async with asyncio.timeout(INFO_STORE_TIMEOUT):
                active = await self.rollouts.store.ids(limit=1, active_only=True)
        except (StoreUnavailable, TimeoutError):
            active = []
        lead, lease = self.leadership, self.leadership.lease
        return pb.HubInfo(version=self.version, uptime_seconds=time.time() - self.started,
                          hostname=self.hostname, host_count=len(self.inventory.hosts),
                          active_rollout_id=active[0] if active else "",
                          started_unix=self.started, leader=lead.leading,
                          leader_address=lead.leader_address(), hub_id=lead.hub_id,
                          epoch=lease.epoch if lease else 0,
                          store_backend=self.rollouts.store.backend,
                          lease_expires_unix=lease.expires_at if lease else 0.0,
                          http_address=self.http_address, http_scheme=self.http_scheme)

    def _hosts(self, request: pb.ListHostsRequest, role: str | None) -> pb.ListHostsResponse:
        now = time.time()
        views = self.inventory.select(dict(request.labels), list(request.names), role=role)
        return conv.hosts_response(views, self.inventory, now)

    @unary
    async def ListHosts(self, request: pb.ListHostsRequest, context: Any) -> pb.ListHostsResponse:
        return self._hosts(request, None)

    @unary
    async def ListAgents(self, request: pb.ListHostsRequest,
                         context: Any) -> pb.ListHostsResponse:
        return self._hosts(request, "agent")

    @unary
    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        return await self.fleet.register(request, peer=context.peer() or "")

    @unary
    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: Any) -> pb.HeartbeatResponse:
        return self.fleet.heartbeat(request)

    @unary
    async def StartRollout(self, request: pb.StartRolloutRequest,
                           context: Any) -> pb.StartRolloutResponse:
        r = await self.rollouts.start(conv.start_request(request))
        return pb.StartRolloutResponse(rollout=conv.rollout(r))

    @unary
    async def GetRollout(self, request: pb.GetRolloutRequest, context: Any) -> pb.Rollout:
        return conv.rollout(await self.rollouts.get(_id(request.id)))

    @unary
    async def ListRollouts(self, request: pb.ListRolloutsRequest,
                           context: Any) -> pb.ListRolloutsResponse:
        found = await self.rollouts.list(request.limit, request.active_only)
        return pb.ListRolloutsResponse(
            rollouts=[conv.rollout(r, with_hosts=request.with_hosts) for r in found])

    async def _control(self, request: pb.RolloutControlRequest, command: str) -> pb.Rollout:
        return conv.rollout(await self.rollouts.control(_id(request.id), command,
                                                        request.reason))

    @unary
    async def PauseRollout(self, request: pb.RolloutControlRequest, context: Any) -> pb.Rollout:
        return await self._control(request, "pause")

    @unary
    async def ResumeRollout(self, request: pb.RolloutControlRequest,
                            context: Any) -> pb.Rollout:
        return await self._control(request, "resume")

    @unary
    async def PromoteRollout(self, request: pb.RolloutControlRequest,
                             context: Any) -> pb.Rollout:
        return await self._control(request, "promote")

    @unary
    async def AbortRollout(self, request: pb.RolloutControlRequest, context: Any) -> pb.Rollout:
        return await self._control(request, "abort")

    @unary
    async def RetryFailed(self, request: pb.RolloutControlRequest, context: Any) -> pb.Rollout:
        return await self._control(request, "retry_failed")

    @stream
    async def WatchRollout(self, request: pb.WatchRolloutRequest,
                           context: Any) -> AsyncIterator[pb.RolloutEvent]:
        if request.from_index > MAX_INDEX:
            raise InvalidArgument(f"from_index: at most {MAX_INDEX}")
        rid = (await self.rollouts.get(_id(request.id))).id
        async for n in self.rollouts.watch(rid, request.from_index,
                                           follow=not request.no_follow):
            yield conv.note(rid, n)

    @unary
    async def HostStatus(self, request: pb.HostStatusRequest,
                         context: Any) -> pb.HostStatusResponse:
        return await self.fleet.host_status(list(request.hosts), request.timeout_seconds)

    @unary
    async def RestartService(self, request: pb.RestartServiceRequest,
                             context: Any) -> mpb.ServiceStatus:
        return await self.fleet.restart(request.host, request.service, force=request.force)

    @stream
    async def StreamHostLogs(self, request: pb.StreamHostLogsRequest,
                             context: Any) -> AsyncIterator[mpb.LogBatch]:
        async for batch in self.fleet.logs(request):
            yield batch

    @unary
    async def StartService(self, request: pb.StartServiceRequest,
                           context: Any) -> mpb.ServiceStatus:
        return await self.fleet.start(request.host, request.service, force=request.force)

    @unary
    async def StopService(self, request: pb.StopServiceRequest,
                          context: Any) -> mpb.ServiceStatus:
        return await self.fleet.stop(request.host, request.service,
                                     timeout=request.timeout_seconds, force=request.force)

    # ---- placeholders: this round's contract, not implemented yet ----------------------

    # ---- events: the hub's own, or a host's through its manager (events_fanout.py) -----

    def _events(self) -> EventLog:
        if self.events is None:
            raise Unimplemented("this hub keeps no event history")
        return self.events

    @unary
    async def ListEvents(self, request: epb.ListEventsRequest,
                         context: Any) -> epb.ListEventsResponse:
        if request.host:
            return await list_host_events(self.inventory, self.fleet.links, request)
        page = await self._events().page(event_wire.page_request(request))
        return event_wire.page_response(page)

    @stream
    async def WatchEvents(self, request: epb.WatchEventsRequest,
                          context: Any) -> AsyncIterator[epb.Event]:
        if request.host:
            async for ev in watch_host_events(self.inventory, self.fleet.links, request):
                yield ev
            return
        flt = event_wire.watch_filter(request)
        async for e in self._events().watch(flt, after_id=request.after_id,
                                            from_now=request.from_now):
            yield event_wire.to_pb(e)
