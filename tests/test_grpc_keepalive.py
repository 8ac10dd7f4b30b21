"""Our servers accept the keepalive pings our clients send. gRPC's server default allows
one ping per 5 minutes without data in between and answers the third early one with
GOAWAY "too_many_pings", breaking every stream on the connection: that cut the hub's idle
WatchStatus streams mid-rollout at 10,000 hosts. A real server on 127.0.0.1 port 0 and a
client that pings every second on an idle stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from backendai import grpc_server
from backendai.channels import CHANNEL_OPTIONS
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc

PING_EVERY_MS = 1000
IDLE_SECONDS = 5.0


class IdleWatch(pb_grpc.ManagerServicer):
    def add_to(self, server: Any) -> None:
        pb_grpc.add_ManagerServicer_to_server(self, server)

    async def WatchStatus(self, request: pb.WatchStatusRequest,
                          context: Any) -> AsyncIterator[pb.ServiceStatus]:
        yield pb.ServiceStatus(name="svc")
        await asyncio.Event().wait()  # then nothing: an idle status stream


async def idle_stream_outcome(options: list[tuple[str, Any]]) -> str:
    """Serve with `options`, hold an idle stream open while the client pings every
    second; "alive" or the status that ended it."""
    server = grpc.aio.server(options=options)
    IdleWatch().add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.keepalive_time_ms", PING_EVERY_MS), ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0)])  # keep pinging however idle
    call = pb_grpc.ManagerStub(channel).WatchStatus(pb.WatchStatusRequest())
    try:
        async with asyncio.timeout(IDLE_SECONDS):
            async for _ in call:
                pass
    except TimeoutError:
        return "alive"
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    else:
        return "ended"
    finally:
        call.cancel()
        await channel.close()
        await server.stop(0)


async def test_a_server_with_grpcs_default_ping_policy_drops_an_idle_pinging_stream():
    """The control: the failure the option prevents, and that the test can see it."""
    outcome = await idle_stream_outcome([])
    assert outcome.startswith("UNAVAILABLE") and "ping" in outcome.lower(), outcome


async def test_our_servers_ping_option_keeps_the_idle_stream():
    """The option our servers set, at a value below this client's ping interval: the
    stream survives (the option's name is one gRPC reads)."""
    scaled = [(k, PING_EVERY_MS // 2 if k == "grpc.http2.min_ping_interval_without_data_ms"
               else v) for k, v in grpc_server.OPTIONS]
    assert scaled != grpc_server.OPTIONS
    assert await idle_stream_outcome(scaled) == "alive"


def test_servers_allow_pings_more_often_than_our_clients_send_them():
    client_ping_ms = dict(CHANNEL_OPTIONS)["grpc.keepalive_time_ms"]
    server = dict(grpc_server.OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] < client_ping_ms
