"""backendai.v1.Manager over gRPC: translates messages to ManagerControl calls.

The servicer runs on a thread-pool `grpc.server` (backendai/grpc_server.py, `threads`):
reads of immutable status snapshots (Status, ListServices, Version) are answered in the
pool thread; everything else runs on the event loop through `LoopBridge`, as the HTTP
shim's calls do, so lifecycle operations stay serialized by the units' locks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from backendai.events import wire as event_wire
from backendai.grpc_handlers import stream_sync, unary_sync
from backendai.loop_bridge import LoopBridge
from backendai.update_terms import outcome_text
from backendai.v1 import events_pb2 as epb
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from manager.api.control import ManagerControl
from manager.supervision.states import ServiceStatus, State

if TYPE_CHECKING:  # the updates wing loads only where updates are configured
    from manager.updates.results import OperationReport

SERVICE_NAME = "backendai.v1.Manager"


STATE_TO_PB: dict[State, pb.ServiceState] = {
    s: getattr(pb, f"SERVICE_STATE_{s.value}") for s in State}


def status_to_pb(st: ServiceStatus, now: float | None = None) -> pb.ServiceStatus:
    """The message for a status snapshot. Snapshots are immutable and replaced on every
    change, so the message is built once per snapshot and copied with the uptime set
    (0.7 us instead of 3.8 us per Status call)."""
    now = time.time() if now is None else now
    cached = _LAST.get(st.name)
    if cached is None or cached[0] is not st:
        cached = _LAST[st.name] = (st, _build(st))
    msg = pb.ServiceStatus()
    msg.CopyFrom(cached[1])
    if st.started_at:
        msg.uptime_seconds = max(0.0, now - st.started_at)
    return msg


_LAST: dict[str, tuple[ServiceStatus, pb.ServiceStatus]] = {}


def _build(st: ServiceStatus) -> pb.ServiceStatus:
    msg = pb.ServiceStatus(
        name=st.name, state=STATE_TO_PB[st.state], pid=st.pid, restarts=st.restarts,
        version=st.version, package=st.package, backend=st.backend, message=st.message,
        state_since_unix=st.state_since, adopted=st.adopted, desired=st.desired,
        health=st.health, health_message=st.health_message,
        health_since_unix=st.health_since, health_failures=st.health_failures,
        instance_of=st.instance_of, instance=st.instance, after=st.after,
        update=pb.UpdateSummary(
            running_operation_id=st.update.running_operation_id,
            last_operation_id=st.update.last_operation_id,
            last_outcome=st.update.last_outcome, last_message=st.update.last_message,
            last_version=st.update.last_version, running_origin=st.update.running_origin,
            last_origin=st.update.last_origin, running_version=st.update.running_version,
            running_step=st.update.running_step))
    if st.exit_code is not None:
        msg.exit_code = st.exit_code
    if st.exit_signal is not None:
        msg.exit_signal = st.exit_signal
    return msg


def operation_to_pb(r: OperationReport) -> pb.UpdateOperation:
    op = r.op
    return pb.UpdateOperation(
        operation_id=op.id, service=op.service, kind=op.kind.value,
        from_version=op.from_version, to_version=op.to_version, state=op.state,
        outcome=outcome_text(op.outcome), message=op.message, origin=op.origin,
        created_unix=op.created, finished_unix=op.finished,
        steps=[pb.UpdateStep(step=s.step, status=s.status, message=s.message,
                             started_unix=s.started, elapsed_seconds=s.elapsed)
               for s in r.steps])


class ManagerServicer(pb_grpc.ManagerServicer):
    def __init__(self, control: ManagerControl, bridge: LoopBridge) -> None:
        self.control = control
        self.bridge = bridge

    def add_to(self, server: grpc.Server) -> None:
        pb_grpc.add_ManagerServicer_to_server(self, server)

    # ---- answered in the pool thread: status snapshots are immutable ------------------

    @unary_sync
    def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(self.control.status(request.service))

    @unary_sync
    def ListServices(self, request: pb.ListServicesRequest,
                     context: Any) -> pb.ListServicesResponse:
        now = time.time()
        found = self.control.count(request.pattern)
        return pb.ListServicesResponse(
            services=[status_to_pb(s, now) for s in found.services], counts=found.counts,
            total=found.total)

    @unary_sync
    def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        info = self.control.version(request.service)
        return pb.VersionResponse(version=info.version, name=info.name,
                                  manager_version=info.manager_version, service=info.service)

    # ---- run on the event loop ---------------------------------------------------------

    @unary_sync
    def Start(self, request: pb.StartRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(self.bridge.call(
            lambda: self.control.start(request.service, wait=not request.no_wait,
                                       force=request.force), context))

    @unary_sync
    def Stop(self, request: pb.StopRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(self.bridge.call(lambda: self.control.stop(
            request.service, timeout=request.timeout_seconds or None, force=request.force),
            context))

    @unary_sync
    def Restart(self, request: pb.RestartRequest, context: Any) -> pb.ServiceStatus:
        return status_to_pb(self.bridge.call(
            lambda: self.control.restart(request.service, force=request.force), context))

    @unary_sync
    def Logs(self, request: pb.LogsRequest, context: Any) -> pb.LogsResponse:
        unit = self.control.unit(request.service)
        lines = self.bridge.call(lambda: self.control.logs(unit.name, request.lines), context)
        return pb.LogsResponse(service=unit.name, lines=lines)

    @stream_sync
    def StreamLogs(self, request: pb.StreamLogsRequest,
                   context: Any) -> Iterator[pb.LogBatch]:
        for batch in self.bridge.iterate(lambda: self.control.follow_logs(
                request.service, request.tail_lines, follow=not request.no_follow), context):
            yield pb.LogBatch(lines=batch)

    @stream_sync
    def WatchStatus(self, request: pb.WatchStatusRequest,
                    context: Any) -> Iterator[pb.ServiceStatus]:
        for st in self.bridge.iterate(lambda: self.control.watch(
                request.service, request.keepalive_seconds), context):
            yield status_to_pb(st)

    @unary_sync
    def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        started = self.bridge.call(lambda: self.control.update(
            request.service, request.version, origin=request.origin,
            start_stopped=request.start_stopped), context)
        return pb.UpdateResponse(operation_id=started.operation_id, message=started.message,
                                 started=started.started, from_version=started.from_version)

    @stream_sync
    def WatchUpdate(self, request: pb.WatchUpdateRequest,
                    context: Any) -> Iterator[pb.UpdateEvent]:
        yield from self.bridge.iterate(lambda: self._update_events(request.operation_id),
                                       context)

    async def _update_events(self, operation_id: str) -> AsyncIterator[pb.UpdateEvent]:
        stream = self.control.watch_update(operation_id)
        op = None
        try:
            async for ev in stream:
                if op is None:
                    op = self.control.require_updater().operation(ev.op_id)
                yield pb.UpdateEvent(
                    operation_id=ev.op_id, step=ev.step.value, status=ev.status.value,
                    message=ev.message, elapsed_seconds=ev.elapsed, at_unix=ev.at,
                    final=ev.final, outcome=outcome_text(ev.outcome),
                    from_version=op.from_version if op else "",
                    to_version=op.to_version if op else "", service=op.service if op else "")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @unary_sync
    def Rollback(self, request: pb.RollbackRequest, context: Any) -> pb.RollbackResponse:
        started = self.bridge.call(lambda: self.control.rollback(
            request.service, origin=request.origin, version=request.version), context)
        return pb.RollbackResponse(operation_id=started.operation_id, version=started.version)

    @unary_sync
    def ListReleases(self, request: pb.ListReleasesRequest,
                     context: Any) -> pb.ListReleasesResponse:
        async def releases() -> list[pb.Release]:  # the updater's state lives on the loop
            return [pb.Release(version=r.version, current=r.current, previous=r.previous,
                               installed_unix=r.installed)
                    for r in self.control.releases(request.service)]
        return pb.ListReleasesResponse(releases=self.bridge.call(releases, context))

    @unary_sync
    def GetUpdate(self, request: pb.GetUpdateRequest, context: Any) -> pb.UpdateOperation:
        async def get() -> OperationReport:  # the updater's state lives on the loop
            return self.control.get_update(request.service, request.operation_id,
                                           request.origin)
        return operation_to_pb(self.bridge.call(get, context))

    @unary_sync
    def CheckRelease(self, request: pb.CheckReleaseRequest,
                     context: Any) -> pb.CheckReleaseResponse:
        unit = self.control.unit(request.service)
        found = self.bridge.call(lambda: self.control.check_release(
            unit.name, request.version), context)
        return pb.CheckReleaseResponse(service=unit.name, version=request.version,
                                       available=found.available, url=found.url,
                                       message=found.message, package=unit.config.package)

    # ---- placeholders: this round's contract, not implemented yet ----------------------

    @unary_sync
    def Reload(self, request: pb.ReloadRequest, context: Any) -> pb.ReloadResponse:
        done = self.bridge.call(self.control.reload, context)
        return pb.ReloadResponse(added=done.added, removed=done.removed, changed=done.changed,
                                 unchanged=done.unchanged, message=done.message)

    # ---- the event history (backendai/events) -------------------------------------------

    @unary_sync
    def ListEvents(self, request: epb.ListEventsRequest, context: Any,
                   ) -> epb.ListEventsResponse:
        event_wire.no_host(request)
        req = event_wire.page_request(request)
        return event_wire.page_response(self.bridge.call(
            lambda: self.control.list_events(req), context))

    @stream_sync
    def WatchEvents(self, request: epb.WatchEventsRequest, context: Any,
                    ) -> Iterator[epb.Event]:
        event_wire.no_host(request)
        flt = event_wire.watch_filter(request)
        for ev in self.bridge.iterate(lambda: self.control.watch_events(
                flt, after_id=request.after_id, from_now=request.from_now), context, depth=64):
            yield event_wire.to_pb(ev)
