"""Client channels to our daemons: bearer token on every call, TLS when configured.

`open_channel("10.0.0.5:3082", token=b"...", tls=ClientTLS(...))` returns a
`grpc.aio.Channel` whose calls all carry `authorization: Bearer TOKEN` (a client
interceptor, so it works on plaintext channels too, where gRPC refuses call
credentials). Used by the hub (to managers), the agent (to the hub) and aictl.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from backendai.auth import Token, as_token
from backendai.grpc_server import MAX_MESSAGE_BYTES
from backendai.tls import ClientTLS

# Reconnect pacing inside gRPC itself (our own loops add jitter on top).
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.enable_retries", 0),
)


def _with_token(details: grpc.aio.ClientCallDetails, token: Token) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(tuple(details.metadata or ())))
    metadata.add("authorization", "Bearer " + token.value.decode("ascii"))
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class _TokenUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: Token) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_with_token(details, self.token), request)


class _TokenUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: Token) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation: Callable[..., Any],
                                     details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_with_token(details, self.token), request)


def token_interceptors(token: bytes | Token | None) -> Sequence[grpc.aio.ClientInterceptor]:
    held = as_token(token)
    if held is None or not held.value:
        return []
    return [_TokenUnaryUnary(held), _TokenUnaryStream(held)]


def open_channel(address: str, *, token: bytes | Token | None = None,
                 tls: ClientTLS | None = None,
                 options: Sequence[tuple[str, Any]] = (),
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """An aio channel to "HOST:PORT" carrying the token; TLS when `tls` is given;
    `interceptors` run besides the token's (e.g. the hub's call metrics)."""
    opts = [*CHANNEL_OPTIONS, *options, *(tls.channel_options() if tls else [])]
    interceptors = [*token_interceptors(token), *interceptors]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), options=opts,
                                   interceptors=interceptors)


def token_metadata(token: bytes | None) -> tuple[tuple[str, str], ...]:
    """Metadata for sync clients (grpc.Channel), which do not share the aio interceptors."""
    return (("authorization", "Bearer " + token.decode("ascii")),) if token else ()
