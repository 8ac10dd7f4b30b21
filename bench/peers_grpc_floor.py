"""The floor for a gRPC status call with the required stack: a bare grpc.aio server that
serves backendai.v1.Manager/Status with a constant reply and nothing else (no health,
reflection, service layer or logging). Measured interleaved with ours and the peers, it
shows how much of our status latency is grpcio's own.

    python bench/peers_grpc_floor.py   # prints the bound port, then serves until killed
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.v1 import manager_pb2 as pb  # noqa: E402 - after the path set-up
from backendai.v1 import manager_pb2_grpc as pb_grpc  # noqa: E402

REPLY = pb.ServiceStatus(name="svc0", state=pb.SERVICE_STATE_RUNNING, pid=1, backend="process")


class BareManager(pb_grpc.ManagerServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.ServiceStatus:
        return REPLY


async def serve() -> None:
    server = grpc.aio.server()
    # Only Status is served: the other methods answer UNIMPLEMENTED, as intended here.
    pb_grpc.add_ManagerServicer_to_server(BareManager(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


class GrpcFloor:
    """The bare server as a child process, with a sync client like the one used for ours."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> pb_grpc.ManagerStub:
        self.proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        return pb_grpc.ManagerStub(self.channel)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


if __name__ == "__main__":
    asyncio.run(serve())
