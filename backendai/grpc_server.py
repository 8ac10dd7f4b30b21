"""A gRPC server with what every daemon of ours serves besides its own service:
grpc.health.v1.Health, server reflection (so `grpcurl list/describe` need no .proto),
and the bearer-token interceptor when a token is configured. Reflection's module and
servicer load at its first call (`LazyReflection`), not at every start.

Two flavours behind one async lifecycle: a grpc.aio server (hub, agent), or, with
`threads=N`, a thread-pool `grpc.server` (the manager: its unary calls answer ~0.1 ms
faster because a completion is not handed from grpc's poller thread to the event loop;
docs/BENCHMARKS.md). Servicers must match the flavour (async or plain methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from backendai.auth import (
    SyncTokenInterceptor,
    Token,
    TokenInterceptor,
    Tokens,
    as_tokens,
    is_read_method,
)
from backendai.listen import ListenAddress

MAX_MESSAGE_BYTES = 4 << 20
# Our clients ping every 30 s on a busy channel (backendai/channels.py keepalive_time_ms).
# gRPC's server default allows one ping per 5 minutes without data in between and
# answers the third early one with GOAWAY "too_many_pings", which breaks every stream on
# the connection: a manager dropped the hub's idle WatchStatus stream that way mid-
# rollout at 10,000 hosts (docs/BENCHMARKS.md, "Hub scale"). Allow what our clients send.
MIN_RECV_PING_INTERVAL_MS = 10_000
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
           ("grpc.so_reuseport", 0),
           ("grpc.http2.min_ping_interval_without_data_ms", MIN_RECV_PING_INTERVAL_MS)]


REFLECTION = "grpc.reflection.v1alpha.ServerReflection"  # the protocol's, fixed


class LazyReflection(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc: untyped
    """Server reflection (`grpcurl list/describe`), loaded at its first call: its module,
    descriptors and servicer (~4 ms) stay off every start's path. It answers reflection's
    method and nothing else (None: other handlers decide, or UNIMPLEMENTED)."""

    def __init__(self, names: Sequence[str], *, aio: bool) -> None:
        self.names = [*names, REFLECTION]
        self.aio = aio
        self._handler: Any = None
        self._lock = threading.Lock()  # pool threads may ask at once

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        if not method.startswith(f"/{REFLECTION}/"):
            return None
        return self._load().service(handler_call_details)

    def _load(self) -> Any:
        with self._lock:
            if self._handler is None:
                # the first reflection call pays for it
                from grpc_reflection.v1alpha import (  # noqa: PLC0415
                    reflection,
                    reflection_pb2,
                )

                servicer = (reflection.aio.ReflectionServicer(self.names) if self.aio
                            else reflection.ReflectionServicer(self.names))
                self._handler = grpc.method_handlers_generic_handler(REFLECTION, {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=(
                            reflection_pb2.ServerReflectionResponse.SerializeToString))})
            return self._handler


class GrpcServer:
    def __init__(self, listen: ListenAddress, *, token: bytes | Token | Tokens | None,
                 services: Sequence[tuple[str, Callable[[Any], None]]],
                 credentials: grpc.ServerCredentials | None = None,
                 open_methods: tuple[str, ...] = (), threads: int = 0,
                 unix_socket: Path | None = None,
                 read_methods: Callable[[str], bool] = is_read_method) -> None:
        """services: (full service name, add-to-server function) pairs; credentials:
        TLS (see backendai.tls.ServerTLS), None for plaintext; open_methods: full
        method names ("/pkg.Service/Method") callable without the token; threads: serve
        from a pool of that many threads (also the most concurrent calls and streams;
        more are refused with RESOURCE_EXHAUSTED) instead of grpc.aio; unix_socket: also
        serve on this unix socket, plaintext, mode 0600 (local clients; the token, when
        configured, is still required); read_methods: which full method names a
        read-only token may call (backendai/auth.py)."""
        tokens = as_tokens(token)
        self.unix_socket = unix_socket
        self.threads = threads
        self.server: Any
        if threads:
            sync_interceptors = [SyncTokenInterceptor(tokens, open_methods, read_methods)] \
                if tokens else []
            self.server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                interceptors=sync_interceptors, options=OPTIONS,
                maximum_concurrent_rpcs=threads)
            self.health: Any = health.HealthServicer()
        else:
            interceptors = [TokenInterceptor(tokens, open_methods, read_methods)] \
                if tokens else []
            self.server = grpc.aio.server(interceptors=interceptors, options=OPTIONS)
            self.health = health.aio.HealthServicer()
        self.listen = listen
        self.names = [name for name, _ in services]
        for _, add in services:
            add(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_generic_rpc_handlers(
            (LazyReflection([*self.names, health.SERVICE_NAME], aio=not threads),))
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
        if self.unix_socket is not None:
            self._bind_unix(self.unix_socket)
        return self.port

    def _bind_unix(self, path: Path) -> None:
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # left by a manager that was killed (the state_dir lock is ours)
            else:
                raise OSError(f"cannot bind gRPC to unix:{path}: exists and is not a socket")
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o177)  # created 0600: only this user (root) can connect
        try:
            bound = self.server.add_insecure_port(f"unix:{path}")
        except RuntimeError:
            bound = 0
        finally:
            os.umask(old)
        if not bound:
            raise OSError(f"cannot bind gRPC to unix:{path}")
        os.chmod(path, 0o600)

    async def start(self) -> tuple[str, int]:
        """Bind (unless bind() did), serve, and say SERVING in health."""
        self.bind()
        serving = health_pb2.HealthCheckResponse.SERVING
        if self.threads:
            self.server.start()
            for name in ["", *self.names]:
                self.health.set(name, serving)
        else:
            await self.server.start()
            for name in ["", *self.names]:
                await self.health.set(name, serving)
        return self.listen.host, self.port

    async def not_serving(self) -> None:
        """First step of a graceful stop: tell health checkers we are going away."""
        if self.threads:
            self.health.enter_graceful_shutdown()
        else:
            await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Stop with grace; calls still running then are cancelled. The event loop keeps
        running meanwhile (a thread-pool servicer may need it to finish its calls)."""
        if self.threads:
            stopped = self.server.stop(grace)
            await asyncio.to_thread(stopped.wait, grace + 5.0)
        else:
            await self.server.stop(grace)
        if self.unix_socket is not None and self.port:
            with contextlib.suppress(OSError):
                self.unix_socket.unlink()
