"""One HTTP(S) POST with a deadline on the whole exchange: the webhook and `_bulk` sinks'
client (h11 over asyncio streams).

The deadline covers connecting, sending and reading the whole answer, so a receiver
that hangs, never answers or trickles its answer a byte at a time costs one
`timeout` and no more; the answer's body is read up to a limit. Failures are
`DeliveryFailed` with a clear reason (never the credentials). TLS options are the
package store's: a CA file (else the system's roots) and a client certificate and key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h11

from backendai import __version__
from backendai.errors import BackendAIError, ConfigError, Unavailable
from backendai.package_store import load_credentials, redact

MAX_ANSWER = 8 << 20
READ_CHUNK = 64 * 1024


class DeliveryFailed(Unavailable):
    """A sink could not deliver a batch (it is retried)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    port: int
    target: str  # path and query, as sent
    ssl: ssl.SSLContext | None
    authorization: str | None
    client_cert: bool = False  # whether a client certificate is presented (mutual TLS)

    @property
    def shown(self) -> str:
        return redact(self.url)


def tls_context(ca_file: str, client_cert: str, client_key: str, prefix: str) -> ssl.SSLContext:
    """The TLS context for an https target; ConfigError naming the key when a file is
    unusable."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{prefix}.ca_file: cannot load {ca_file!r}: {exc}") from None
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{prefix}.client_cert: cannot load the client certificate "
                              f"and key: {exc}") from None
    return context


def target(url: str, *, ca_file: str = "", client_cert: str = "", client_key: str = "",
           credentials_file: str = "", prefix: str = "event_sinks") -> Target:
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    authorization = None
    if credentials_file:
        try:
            authorization = load_credentials(Path(credentials_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{prefix}.credentials_file: {exc}") from None
    path = parts.path or "/"
    return Target(url, parts.hostname or "", parts.port or (443 if secure else 80),
                  path + (f"?{parts.query}" if parts.query else ""),
                  tls_context(ca_file, client_cert, client_key, prefix) if secure else None,
                  authorization, bool(client_cert))


def with_path(t: Target, suffix: str) -> Target:
    """The same target with `suffix` appended to its path (`/_bulk`)."""
    path, _, query = t.target.partition("?")
    new = path.rstrip("/") + suffix + (f"?{query}" if query else "")
    return dataclasses.replace(t, url=t.url.rstrip("/") + suffix, target=new)


async def post(t: Target, body: bytes, content_type: str,
               headers: Sequence[tuple[str, str]] = (), *, timeout: float,
               max_answer: int = MAX_ANSWER) -> tuple[int, bytes]:
    """POST `body`; the answer's status and body. DeliveryFailed when it cannot."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(t, body, content_type, headers, max_answer)
    except TimeoutError:
        raise DeliveryFailed(f"{t.shown}: no complete answer within {timeout:g}s") from None
    except BackendAIError:
        raise
    except (OSError, ssl.SSLError, h11.ProtocolError, EOFError) as exc:
        raise DeliveryFailed(f"{t.shown}: {_reason(exc)}") from None


def _ended_after_handshake(t: Target) -> str:
    """Why a TLS receiver ends the session before answering (in TLS 1.3 a refused client
    certificate is only seen then: as a reset, an alert or an end of stream)."""
    if t.client_cert:
        return ("the receiver ended the TLS session before answering: it may not trust "
                "client_cert")
    return ("the receiver ended the TLS session before answering: it may require a client "
            "certificate (client_cert is not set)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def _exchange(t: Target, body: bytes, content_type: str,
                    headers: Sequence[tuple[str, str]], max_answer: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(
        t.host, t.port, ssl=t.ssl, server_hostname=t.host if t.ssl else None,
        limit=READ_CHUNK)
    try:
        conn = h11.Connection(h11.CLIENT)
        try:
            status = await _send_and_read_head(t, conn, (reader, writer), body=body,
                                               content_type=content_type, headers=headers)
        except (OSError, EOFError, h11.RemoteProtocolError) as exc:  # ssl.SSLError too
            if t.ssl is None:
                raise
            raise DeliveryFailed(f"{t.shown}: {_reason(exc)}; "
                                 f"{_ended_after_handshake(t)}") from None
        answer = bytearray()
        while status:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_CHUNK))
            elif isinstance(event, h11.Data):
                answer += event.data
                if len(answer) > max_answer:
                    raise DeliveryFailed(f"{t.shown}: answer larger than {max_answer} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if not status:
            hint = f"; {_ended_after_handshake(t)}" if t.ssl is not None else ""
            raise DeliveryFailed(f"{t.shown}: closed without an answer{hint}")
        return status, bytes(answer)
    finally:
        writer.transport.abort()  # never wait on a peer that stopped reading
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _send_and_read_head(t: Target, conn: h11.Connection,
                              stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], *,
                              body: bytes, content_type: str,
                              headers: Sequence[tuple[str, str]]) -> int:
    """Send the request; the answer's status (0: the peer closed without one)."""
    reader, writer = stream
    netloc = t.host if t.port in (80, 443) else f"{t.host}:{t.port}"
    sent = [("Host", netloc), ("User-Agent", f"backendai-events/{__version__}"),
            ("Content-Type", content_type), ("Content-Length", str(len(body))),
            ("Connection", "close"), *headers]
    if t.authorization:
        sent.append(("Authorization", t.authorization))
    writer.write(conn.send(h11.Request(method="POST", target=t.target, headers=sent)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_CHUNK))
        elif isinstance(event, h11.Response):
            return int(event.status_code)
        elif isinstance(event, h11.ConnectionClosed):
            return 0
