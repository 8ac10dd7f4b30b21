"""The floor for a gRPC status call with the required stack: a bare grpc.aio server that
serves backendai.v1.Manager/Status with a constant reply and nothing else (no health,
reflection, service layer or logging). Measured interleaved with ours and the peers, it
shows how much of our status latency is grpcio's own.

    python bench/peers_grpc_floor.py [--stack | --threads]  # prints the port, serves until killed

With --threads it is a bare thread-pool `grpc.server` instead (what the manager serves
its Manager service with since it moved off grpc.aio).

With --stack it is the memory floor of the required stack instead: it also imports what
the manager cannot do without (structlog, psutil, h11, sqlite3), serves health and
reflection next to Manager, and listens with an asyncio TCP server, as the manager does.

With --imports it serves nothing: it imports the required stack's packages alone (grpc,
the generated stubs, structlog, psutil), prints the CPU seconds the process has used,
and exits; no manager can be ready sooner than that (`ImportFloor`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.v1 import manager_pb2 as pb  # noqa: E402 - after the path set-up
from backendai.v1 import manager_pb2_grpc as pb_grpc  # noqa: E402

REPLY = pb.ServiceStatus(name="svc0", state=pb.SERVICE_STATE_RUNNING, pid=1, backend="process")


class BareSyncManager(pb_grpc.ManagerServicer):
    def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        return REPLY


def serve_threads() -> None:
    from concurrent import futures  # noqa: PLC0415

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_ManagerServicer_to_server(BareSyncManager(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


class BareManager(pb_grpc.ManagerServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        return REPLY


async def serve(stack: bool) -> None:
    server = grpc.aio.server()
    # Only Status is served: the other methods answer UNIMPLEMENTED, as intended here.
    pb_grpc.add_ManagerServicer_to_server(BareManager(), server)  # type: ignore[abstract]
    if stack:
        import sqlite3  # noqa: PLC0415, F401 - what the manager imports, for its RSS

        import h11  # noqa: PLC0415, F401
        import psutil  # noqa: PLC0415, F401
        import structlog  # noqa: PLC0415, F401
        from grpc_health.v1 import health, health_pb2_grpc  # noqa: PLC0415
        from grpc_reflection.v1alpha import reflection  # noqa: PLC0415

        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        reflection.enable_server_reflection(
            ["backendai.v1.Manager", health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


class GrpcFloor:
    """The bare server as a child process, with a sync client like the one used for ours."""

    def __init__(self, *, stack: bool = False, threads: bool = False) -> None:
        self.stack = stack
        self.threads = threads
        self.proc: subprocess.Popen[str] | None = None
        self.channel: grpc.Channel | None = None
        self.took = 0.0

    def start(self) -> pb_grpc.ManagerStub:
        """Spawn it; `took` is then the seconds until it served (printed its port)."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *(["--stack"] if self.stack else []),
             *(["--threads"] if self.threads else [])],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.took = time.monotonic() - t0
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        return pb_grpc.ManagerStub(self.channel)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


class ImportFloor:
    """The start floor of the required stack: a process that only imports it. `took`: the
    seconds from spawn until the imports are done; `cpu`: the process's CPU until then."""

    def __init__(self) -> None:
        self.took = 0.0
        self.cpu = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, __file__, "--imports"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert proc.stdout is not None
            self.cpu = float(proc.stdout.readline())
            self.took = time.monotonic() - t0
        finally:
            proc.kill()
            proc.wait(10)


def imports_only() -> None:
    """grpc and the generated stubs are imported above; then the rest of the stack."""
    import psutil  # noqa: PLC0415, F401 - the imports are the measurement
    import structlog  # noqa: PLC0415, F401

    print(time.process_time(), flush=True)


if __name__ == "__main__":
    if "--imports" in sys.argv[1:]:
        imports_only()
    elif "--threads" in sys.argv[1:]:
        serve_threads()
    else:
        asyncio.run(serve("--stack" in sys.argv[1:]))
