"""The shared servicer decorators over a real gRPC server on 127.0.0.1 port 0, both
flavours (grpc.aio and the thread pool): a TimeoutError becomes DEADLINE_EXCEEDED naming
the step (step_deadline) or else the RPC method, never INTERNAL with a stack trace; a
bug is INTERNAL "internal error", logged with its stack trace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from backendai.deadlines import step_deadline
from backendai.errors import DeadlineExceeded
from backendai.grpc_handlers import stream, stream_sync, unary, unary_sync
from backendai.grpc_server import GrpcServer
from backendai.listen import ListenAddress
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc

STEP = "restart of ai-agent on host agent-3"


class AioServicer(pb_grpc.ManagerServicer):
    def add_to(self, server: Any) -> None:
        pb_grpc.add_ManagerServicer_to_server(self, server)

    @unary
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()
        raise AssertionError("unreachable")

    @unary
    async def Restart(self, request: pb.RestartRequest, context: Any) -> pb.ServiceStatus:
        async with step_deadline(STEP, 0.05):
            await asyncio.Event().wait()
        raise AssertionError("unreachable")

    @unary
    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        raise RuntimeError("a bug")

    @stream
    async def WatchStatus(self, request: pb.WatchStatusRequest,
                          context: Any) -> AsyncIterator[pb.ServiceStatus]:
        yield pb.ServiceStatus(name="first")
        raise TimeoutError

    @stream
    async def StreamLogs(self, request: pb.StreamLogsRequest,
                         context: Any) -> AsyncIterator[pb.LogBatch]:
        async with step_deadline(STEP, 0.05):
            await asyncio.Event().wait()
        yield pb.LogBatch()


class SyncServicer(pb_grpc.ManagerServicer):
    def add_to(self, server: Any) -> None:
        pb_grpc.add_ManagerServicer_to_server(self, server)

    @unary_sync
    def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        raise TimeoutError

    @unary_sync
    def Restart(self, request: pb.RestartRequest, context: Any) -> pb.ServiceStatus:
        raise DeadlineExceeded(f"{STEP}: no answer within 1s")

    @unary_sync
    def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        raise RuntimeError("a bug")

    @stream_sync
    def WatchStatus(self, request: pb.WatchStatusRequest,
                    context: Any) -> Iterator[pb.ServiceStatus]:
        yield pb.ServiceStatus(name="first")
        raise TimeoutError

    @stream_sync
    def StreamLogs(self, request: pb.StreamLogsRequest, context: Any) -> Iterator[pb.LogBatch]:
        raise DeadlineExceeded(f"{STEP}: no answer within 1s")
        yield pb.LogBatch()


def _error(fn: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value


@pytest.mark.parametrize("threads", [0, 2])
async def test_timeouts_answer_deadline_exceeded_naming_the_step_or_the_method(threads):
    servicer = SyncServicer() if threads else AioServicer()
    server = GrpcServer(ListenAddress("127.0.0.1", 0), token=None,
                        services=[("backendai.v1.Manager", servicer.add_to)], threads=threads)
    _, port = await server.start()

    def calls() -> list[grpc.RpcError]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ManagerStub(ch)
            got: list[pb.ServiceStatus] = []

            def watch() -> None:
                got.extend(stub.WatchStatus(pb.WatchStatusRequest(), timeout=10))

            errors = [_error(lambda: stub.Status(pb.StatusRequest(), timeout=10)),
                      _error(lambda: stub.Restart(pb.RestartRequest(), timeout=10)),
                      _error(watch),
                      _error(lambda: list(stub.StreamLogs(pb.StreamLogsRequest(),
                                                          timeout=10)))]
            assert [s.name for s in got] == ["first"]  # what came before still arrived
            bug = _error(lambda: stub.Version(pb.VersionRequest(), timeout=10))
            assert (bug.code(), bug.details()) == (grpc.StatusCode.INTERNAL, "internal error")
            return errors

    try:
        with capture_logs() as logs:
            bare, named, bare_stream, named_stream = await asyncio.to_thread(calls)
    finally:
        await server.stop(0)
    for err in (bare, named, bare_stream, named_stream):
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert bare.details() == "Status: timed out"
    assert bare_stream.details() == "WatchStatus: timed out"
    assert named.details().startswith(f"{STEP}: no answer within")
    assert named_stream.details().startswith(f"{STEP}: no answer within")
    (bug,) = [e for e in logs if e["event"] == "grpc.internal_error"]  # only the bug
    assert bug["method"] == "Version" and isinstance(bug["exc_info"], RuntimeError)
    assert [e["method"] for e in logs if e["event"] == "grpc.deadline_exceeded"] == \
        ["Status", "WatchStatus"]
