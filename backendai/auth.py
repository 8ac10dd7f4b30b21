"""Bearer-token auth shared by the gRPC interceptor and the HTTP shim."""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from backendai.errors import ConfigError

# Health and reflection stay open so probes and `grpcurl list` work without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_TOKEN_BYTES = 4096


def load_token(path: Path, key: str = "auth_token_file") -> bytes:
    """Read a token file; refuse files others can read or that are empty."""
    try:
        st = path.stat()
        raw = path.read_bytes()[:MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        raise ConfigError(f"{key}: {str(path)!r} must not be writable or readable by others "
                          f"(chmod 600)")
    token = raw.strip()
    if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii() or b" " in token:
        raise ConfigError(f"{key}: {str(path)!r} must hold one token of printable ASCII")
    return token


class Token:
    """A bearer token that can change while the daemon runs: SIGHUP re-reads its file
    (`reload()`), and every check and every outgoing call uses the current value."""

    def __init__(self, value: bytes, path: Path | None = None,
                 key: str = "auth_token_file") -> None:
        self.value = value
        self.path = path
        self.key = key

    @classmethod
    def from_file(cls, path: Path, key: str = "auth_token_file") -> Token:
        return cls(load_token(path, key), path, key)

    def reread(self) -> bytes:
        """The file's token now (ConfigError if it is unusable); assign it to `value`."""
        return load_token(self.path, self.key) if self.path is not None else self.value


def as_token(token: bytes | Token | None) -> Token | None:
    return Token(token) if isinstance(token, bytes) else token


def bearer_ok(header: str | bytes | None, token: bytes) -> bool:
    """Constant-time check of an `Authorization: Bearer …` value."""
    if header is None:
        return False
    value = header.encode("latin-1", "replace") if isinstance(header, str) else header
    scheme, _, given = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    # hmac (with hashlib and OpenSSL's digests) costs ~0.7 MB RSS: only daemons that
    # check tokens load it (docs/BENCHMARKS.md).
    import hmac  # noqa: PLC0415

    return hmac.compare_digest(given.strip(), token)


def write_token(path: Path, token: str) -> None:
    """Create a token file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


DENIED = "missing or invalid bearer token"


class _TokenCheck:
    def __init__(self, token: bytes | Token, open_methods: tuple[str, ...] = ()) -> None:
        """open_methods: full method names that need no token besides health and
        reflection (e.g. a read-only version RPC a local health probe calls)."""
        self._token = Token(token) if isinstance(token, bytes) else token
        self._open = OPEN_SERVICES + tuple(open_methods)

    def allows(self, handler: Any, details: Any) -> bool:
        if handler is None or details.method.startswith(self._open):
            return True
        metadata = dict(details.invocation_metadata or ())
        return bearer_ok(metadata.get("authorization"), self._token.value)


class TokenInterceptor(_TokenCheck, grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls to our services without the bearer token (UNAUTHENTICATED)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any,
    ) -> Any:
        handler = await continuation(details)
        return handler if self.allows(handler, details) else _like(handler, _abort, _abort_gen)


class SyncTokenInterceptor(_TokenCheck, grpc.ServerInterceptor):  # type: ignore[misc]
    """The same check for a thread-pool `grpc.server`."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        return handler if self.allows(handler, details) else _like(
            handler, _abort_sync, _abort_sync)


async def _abort(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


async def _abort_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
    yield  # pragma: no cover - makes this an async generator


def _abort_sync(request: Any, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


def _like(handler: Any, unary: Any, streaming: Any) -> Any:
    """A handler of the same kind as `handler` that runs `unary` (or, answering with a
    stream, `streaming`) instead."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
