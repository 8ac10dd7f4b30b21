"""A grpc.aio server with what every daemon of ours serves besides its own service:
grpc.health.v1.Health, server reflection (so `grpcurl list/describe` need no .proto),
and the bearer-token interceptor when a token is configured."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from backendai.auth import TokenInterceptor
from backendai.listen import ListenAddress

MAX_MESSAGE_BYTES = 4 << 20


class GrpcServer:
    def __init__(self, listen: ListenAddress, *, token: bytes | None,
                 services: Sequence[tuple[str, Callable[[Any], None]]],
                 credentials: grpc.ServerCredentials | None = None,
                 open_methods: tuple[str, ...] = ()) -> None:
        """services: (full service name, add-to-server function) pairs; credentials:
        TLS (see backendai.tls.ServerTLS), None for plaintext; open_methods: full
        method names ("/pkg.Service/Method") callable without the token."""
        interceptors = [TokenInterceptor(token, open_methods)] if token else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        self.listen = listen
        self.names = [name for name, _ in services]
        self.health = health.aio.HealthServicer()
        for _, add in services:
            add(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.port = 0
        self.credentials = credentials

    def bind(self) -> int:
        """Bind the port (a taken port fails here, before anything else starts)."""
        if self.port:
            return self.port
        try:
            if self.credentials is None:
                self.port = self.server.add_insecure_port(str(self.listen))
            else:
                self.port = self.server.add_secure_port(str(self.listen), self.credentials)
        except RuntimeError:  # grpcio raises this (not OSError) when the port is taken
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {self.listen}")
        return self.port

    async def start(self) -> tuple[str, int]:
        """Bind (unless bind() did), serve, and say SERVING in health."""
        self.bind()
        await self.server.start()
        for name in ["", *self.names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.listen.host, self.port

    async def not_serving(self) -> None:
        """First step of a graceful stop: tell health checkers we are going away."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
