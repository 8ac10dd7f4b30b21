"""backendai.v1.Manager over gRPC: translates messages to ManagerControl calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from backendai.grpc_handlers import stream, unary
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from manager.control import ManagerControl
from manager.states import ServiceStatus, State

SERVICE_NAME = "backendai.v1.Manager"


STATE_TO_PB: dict[State, pb.ServiceState] = {
    s: getattr(pb, f"SERVICE_STATE_{s.value}") for s in State}


def status_to_pb(st: ServiceStatus, now: float | None = None) -> pb.ServiceStatus:
    now = time.time() if now is None else now
    msg = pb.ServiceStatus(
        name=st.name, state=STATE_TO_PB[st.state],
        pid=st.pid, uptime_seconds=max(0.0, now - st.started_at) if st.started_at else 0.0,
        restarts=st.restarts, version=st.version, package=st.package, backend=st.backend,
        message=st.message, state_since_unix=st.state_since, adopted=st.adopted,
        update=pb.UpdateSummary(
            running_operation_id=st.update.running_operation_id,
            last_operation_id=st.update.last_operation_id,
            last_outcome=st.update.last_outcome, last_message=st.update.last_message,
            last_version=st.update.last_version))
    if st.exit_code is not None:
        msg.exit_code = st.exit_code
    if st.exit_signal is not None:
        msg.exit_signal = st.exit_signal
    return msg


class ManagerServicer(pb_grpc.ManagerServicer):
    def __init__(self, control: ManagerControl) -> None:
        self.control = control

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ManagerServicer_to_server(self, server)

    @unary
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(self.control.status(request.service))

    @unary
    async def ListServices(self, request: pb.ListServicesRequest,
                           context: Any) -> pb.ListServicesResponse:
        now = time.time()
        return pb.ListServicesResponse(
            services=[status_to_pb(s, now) for s in self.control.list(request.pattern)])

    @unary
    async def Start(self, request: pb.StartRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(await self.control.start(request.service, wait=not request.no_wait))

    @unary
    async def Stop(self, request: pb.StopRequest, context: Any) -> pb.ServiceStatus:
        st = await self.control.stop(request.service, timeout=request.timeout_seconds or None,
                                     force=request.force)
        return status_to_pb(st)

    @unary
    async def Restart(self, request: pb.RestartRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(await self.control.restart(request.service))

    @unary
    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        info = self.control.version(request.service)
        return pb.VersionResponse(version=info.version, name=info.name,
                                  manager_version=info.manager_version, service=info.service)

    @unary
    async def Logs(self, request: pb.LogsRequest, context: Any) -> pb.LogsResponse:
        unit = self.control.unit(request.service)
        lines = await self.control.logs(unit.name, request.lines)
        return pb.LogsResponse(service=unit.name, lines=lines)

    @stream
    async def StreamLogs(self, request: pb.StreamLogsRequest,
                         context: Any) -> AsyncIterator[pb.LogBatch]:
        stream = self.control.follow_logs(request.service, request.tail_lines,
                                          follow=not request.no_follow)
        try:
            async for batch in stream:
                yield pb.LogBatch(lines=batch)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @stream
    async def WatchStatus(self, request: pb.WatchStatusRequest,
                          context: Any) -> AsyncIterator[pb.ServiceStatus]:
        stream = self.control.watch(request.service)
        try:
            async for st in stream:
                yield status_to_pb(st)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @unary
    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        started = await self.control.update(request.service, request.version)
        return pb.UpdateResponse(operation_id=started.operation_id, message=started.message)

    @stream
    async def WatchUpdate(self, request: pb.WatchUpdateRequest,
                          context: Any) -> AsyncIterator[pb.UpdateEvent]:
        stream = self.control.watch_update(request.operation_id)
        op = None
        try:
            async for ev in stream:
                if op is None:
                    op = self.control.require_updater().operation(ev.op_id)
                yield pb.UpdateEvent(
                    operation_id=ev.op_id, step=ev.step, status=ev.status, message=ev.message,
                    elapsed_seconds=ev.elapsed, at_unix=ev.at, final=ev.final,
                    outcome=ev.outcome, from_version=op.from_version if op else "",
                    to_version=op.to_version if op else "", service=op.service if op else "")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @unary
    async def Rollback(self, request: pb.RollbackRequest, context: Any) -> pb.RollbackResponse:
        started = await self.control.rollback(request.service)
        return pb.RollbackResponse(operation_id=started.operation_id, version=started.version)

    @unary
    async def ListReleases(self, request: pb.ListReleasesRequest,
                           context: Any) -> pb.ListReleasesResponse:
        return pb.ListReleasesResponse(releases=[
            pb.Release(version=r.version, current=r.current, previous=r.previous,
                       installed_unix=r.installed)
            for r in self.control.releases(request.service)])
