"""WebSocket (RFC 6455) server sessions on the shared HTTP server's `Upgrade` seam.

wsproto parses and writes the frames (sans-IO: this module only moves bytes); h11 did
the HTTP part. A route handler calls `websocket(request, app)`: the handshake is checked
(version 13, a valid key, same-origin when a browser sends `Origin`) and answered with
`101`, then `app(ws)` runs with a `WebSocket`:

- incoming: text messages only (binary closes with 1003), at most `max_message` bytes
  each (1009), at most `max_incoming` waiting for the app and a token-bucket rate of
  messages and pings (a flood closes with 1008); `receive()` returns the next one.
- outgoing: `publish(key, payload)` coalesces: a message not yet sent is replaced by a
  newer one with the same key (a slow reader gets the latest value per key, never a
  backlog); `send(payload)` queues in order and waits while `max_pending` are queued
  (backpressure for producers that can wait, like a log tail). A client that takes no
  frame for `write_timeout` is dropped.
- keepalive: after `ping_interval` without hearing from the client a ping goes out; no
  answer within `ping_timeout` ends the connection.
- close: the app returning closes with 1000 (after what it queued); `close(code)`
  closes at once, dropping what is queued; the client's close is answered; the server
  stopping closes with 1001. Each then waits up to `close_timeout` for the other side.

A caller the app's `allowed` check refuses (by default: no valid token) gets the
handshake and then, before any data, a close with 1008, which a browser can tell from
a network error (a refused handshake shows only as 1006).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import enum
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from backendai.auth import ANONYMOUS, DENIED, Identity
from backendai.http_server import HttpError, Request, Upgrade, UpgradedStream

log = structlog.get_logger(__name__)

VERSION = "13"


class Code(enum.IntEnum):
    """Close codes (RFC 6455 7.4.1) this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server stops, or the client stopped answering pings
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # binary where text is expected
    INVALID_DATA = 1007  # text that is not UTF-8
    POLICY_VIOLATION = 1008  # no or a wrong token, a flood of messages
    TOO_BIG = 1009  # a message larger than max_message
    INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int = 64 * 1024  # bytes of one incoming message
    max_incoming: int = 16  # incoming messages the app has not taken yet
    rate: float = 20.0  # incoming messages and pings per second, sustained
    burst: int = 40  # ... and at once
    max_pending: int = 64  # ordered outgoing messages queued (send() waits beyond)
    max_keys: int = 10_000  # coalesced outgoing messages queued (distinct keys)
    ping_interval: float = 20.0  # seconds without hearing from the client before a ping
    ping_timeout: float = 20.0  # seconds to answer it
    write_timeout: float = 30.0  # seconds for the client to take one frame
    close_timeout: float = 1.0  # seconds to wait for the other side's close


class ConnectionClosed(Exception):
    """The WebSocket is closing or closed: raised by receive(), send() and publish()."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


App = Callable[["WebSocket"], Awaitable[None]]
Check = Callable[[Identity], bool]


def _authenticated(identity: Identity) -> bool:
    return identity.authenticated


def websocket(request: Request, app: App, *, limits: Limits | None = None,
              allowed: Check = _authenticated, reason: str = DENIED) -> Upgrade:
    """Accept a WebSocket handshake (HttpError 400/403/426 for a bad one) and run `app`
    on the connection; a caller `allowed` refuses is closed with 1008 `reason` first."""
    headers = handshake(request)
    limits = limits or Limits()
    identity = request.caller.identity

    async def session(stream: UpgradedStream) -> None:
        ws = WebSocket(stream, request, limits)
        if not allowed(identity):
            log.info("websocket.refused", caller=identity.name, reason=reason)
            await ws.run(_refuse(reason))
        else:
            await ws.run(app)

    return Upgrade("websocket", session, headers)


def _refuse(reason: str) -> App:
    async def refuse(ws: WebSocket) -> None:
        await ws.close(Code.POLICY_VIOLATION, reason)
    return refuse


def handshake(request: Request) -> list[tuple[str, str]]:
    """Check a WebSocket opening handshake; the headers of the 101 answer."""
    h = request.headers
    upgrade = h.get(b"upgrade")
    if upgrade is None:
        raise HttpError(426, "this endpoint speaks websocket only: send Upgrade: websocket",
                        [("Upgrade", "websocket")])
    if upgrade.strip().lower() != b"websocket":
        raise HttpError(400, "Upgrade must be websocket")
    tokens = {t.strip().lower() for t in h.get(b"connection", b"").split(b",")}
    if b"upgrade" not in tokens:
        raise HttpError(400, "Connection must include Upgrade")
    if h.get(b"sec-websocket-version", b"").strip() != VERSION.encode():
        raise HttpError(426, f"unsupported WebSocket version (this server speaks {VERSION})",
                        [("Sec-WebSocket-Version", VERSION)])
    key = h.get(b"sec-websocket-key", b"").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise HttpError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    check_origin(request)
    return [("Sec-WebSocket-Accept", generate_accept_token(key).decode("ascii"))]


def check_origin(request: Request) -> None:
    """A browser names the page that opens a WebSocket in `Origin`; WebSockets have no
    CORS, so another site's page could otherwise talk to us with the user's network
    position. Only our own pages may: the Origin's host and port must be the Host we
    were reached by. A server without tokens (open on loopback) also wants an IP address
    or `localhost` as Host, so a DNS-rebinding name cannot pass as same-origin.
    Non-browser clients send no Origin and are not affected."""
    origin = request.headers.get(b"origin")
    if origin is None:
        return
    text = origin.decode("latin-1").strip()
    host = request.headers.get(b"host", b"").decode("latin-1").strip().lower()
    try:
        parts = urlsplit(text)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        origin_host = (parts.hostname or "").lower()
        origin_port = parts.port or default
    except ValueError:
        origin_host, origin_port = "", None
    try:
        own = urlsplit(f"http://{host}")
        own_host, own_port = (own.hostname or "").lower(), own.port
    except ValueError:
        own_host, own_port = "", None
    if own_port is None and origin_port is not None:
        own_port = origin_port if origin_port in (80, 443) else None
    if not origin_host or origin_host != own_host or origin_port != own_port:
        raise HttpError(403, f"cross-origin WebSocket refused (Origin {text[:100]!r} is not "
                             f"this server, {host[:100]!r})")
    identity = request.caller.identity
    if identity.name == ANONYMOUS and identity.authenticated and not _literal(own_host):
        raise HttpError(403, "without a token this server accepts browser WebSockets only "
                             "at an IP address or localhost (configure auth_token_file to "
                             "use a host name)")


def _literal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def dumps(payload: Any) -> str:
    """A payload as the text of one message (a str is sent as it is)."""
    return payload if isinstance(payload, str) else json.dumps(payload,
                                                               separators=(",", ":"))


class WebSocket:
    """One server-side WebSocket connection (after the 101)."""

    def __init__(self, stream: UpgradedStream, request: Request, limits: Limits) -> None:
        self.stream = stream
        self.request = request
        self.identity = request.caller.identity
        self.limits = limits
        self._conn = Connection(ConnectionType.SERVER)
        self._inbox: asyncio.Queue[str] = asyncio.Queue(limits.max_incoming)
        self._out: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        self._ordered = 0  # ordered (send()) messages in _out
        self._seq = 0
        self._pong: bytes | None = None
        self._ping: bytes | None = None
        self._wake = asyncio.Event()  # the writer has something to do
        self._space = asyncio.Event()  # an ordered message left the queue
        self._changed = asyncio.Event()  # a close was sent or received, or the link broke
        self._ended = asyncio.Event()  # closing began or the link broke
        self._closing: tuple[int, str] | None = None  # the close we send
        self._drop = False  # send the close before what is queued (drop it)
        self._close_sent = False
        self._close_received = False
        self._broken = False
        self._heard = time.monotonic()
        self._tokens = float(limits.burst)
        self._refilled = self._heard
        self.sent = 0  # messages written
        self.coalesced = 0  # messages replaced by a newer one before they were sent
        self.received = 0

    # ---- the app's side ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing is not None or self._broken

    def _check_open(self) -> None:
        if self._closing is not None:
            raise ConnectionClosed(*self._closing)
        if self._broken:
            raise ConnectionClosed(Code.GOING_AWAY, "connection lost")

    async def receive(self) -> str:
        """The next text message from the client (ConnectionClosed once it closes)."""
        while self._inbox.empty():
            self._check_open()
            getting = asyncio.ensure_future(self._inbox.get())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({getting, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not getting.done():
                    getting.cancel()
            if getting.done() and not getting.cancelled():
                return getting.result()
        return self._inbox.get_nowait()

    def publish(self, key: str, payload: Any) -> None:
        """Queue `payload` (a str, or JSON) as the latest message for `key`: one for the
        same key still queued is replaced, keeping its place. Never blocks."""
        self._check_open()
        slot = ("k", key)
        if slot in self._out:
            self.coalesced += 1
        elif len(self._out) - self._ordered >= self.limits.max_keys:
            self._fail(Code.INTERNAL_ERROR, "too many distinct updates queued")
            self._check_open()
        self._out[slot] = payload
        self._wake.set()

    async def send(self, payload: Any) -> None:
        """Queue `payload` after everything queued; waits while `max_pending` ordered
        messages are queued (the client reads slowly)."""
        while True:
            self._check_open()
            if self._ordered < self.limits.max_pending:
                break
            self._space.clear()
            await self._space.wait()
        self._seq += 1
        self._out[("o", self._seq)] = payload
        self._ordered += 1
        self._wake.set()

    async def close(self, code: int = Code.NORMAL, reason: str = "") -> None:
        """Close now: what is queued and not sent is dropped. Returns at once; the
        session ends once the close handshake is done (or close_timeout passed)."""
        self._begin_close(code, reason, drop=True)

    # ---- the session --------------------------------------------------------------------

    async def run(self, app: App) -> None:
        """Serve the connection until the close handshake ends (or the link breaks)."""
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_loop(), name="ws-reader")
        writer = loop.create_task(self._write_loop(), name="ws-writer")
        keepalive = loop.create_task(self._keepalive(), name="ws-keepalive")
        stopping = loop.create_task(self.stream.stopping.wait(), name="ws-stopping")
        ended = loop.create_task(self._ended.wait(), name="ws-ended")
        handler = loop.create_task(self._run_app(app), name="ws-app")
        tasks = (reader, writer, keepalive, stopping, ended, handler)
        try:
            await asyncio.wait({ended, stopping, handler}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                self._begin_close(Code.GOING_AWAY, "server stopping", drop=False)
            elif handler.done():
                self._begin_close(Code.NORMAL, "", drop=False)
            handler.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.close_timeout):
                    while not (self._broken or (self._close_sent and self._close_received)):
                        self._changed.clear()
                        await self._changed.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.debug("websocket.closed", caller=self.identity.name,
                      code=self._closing[0] if self._closing else None,
                      broken=self._broken, sent=self.sent, coalesced=self.coalesced,
                      received=self.received)

    async def _run_app(self, app: App) -> None:
        try:
            await app(self)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("websocket.app_error", caller=self.identity.name)
            self._begin_close(Code.INTERNAL_ERROR, "internal error", drop=True)

    def _begin_close(self, code: int, reason: str, *, drop: bool) -> None:
        """Queue our close frame (once): after what is queued, or before it (drop; a
        close already queued behind data can still be moved ahead of it)."""
        if self._broken:
            return
        if self._closing is None:
            self._closing = (int(code), reason[:120])
        if drop:
            self._drop = True
            self._out.clear()
            self._ordered = 0
        self._space.set()
        self._wake.set()
        self._ended.set()
        self._changed.set()

    def _fail(self, code: int, reason: str) -> None:
        log.info("websocket.failing", caller=self.identity.name, code=int(code),
                 reason=reason)
        self._begin_close(code, reason, drop=True)

    def _set_broken(self) -> None:
        self._broken = True
        self._space.set()
        self._ended.set()
        self._changed.set()

    # ---- reading --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        partial: list[str] = []
        size = 0
        try:
            while not self._close_received:
                data = await self.stream.read()
                if not data:
                    self._set_broken()
                    return
                self._heard = time.monotonic()
                self._conn.receive_data(data)
                for event in self._conn.events():
                    if isinstance(event, CloseConnection):
                        self._on_close(event)
                        break
                    if self._closing is not None:
                        continue  # closing: data is read and ignored until the reply
                    if isinstance(event, TextMessage):
                        size += len(event.data.encode("utf-8", "surrogatepass"))
                        if size > self.limits.max_message:
                            self._fail(Code.TOO_BIG, f"message larger than "
                                                     f"{self.limits.max_message} bytes")
                            continue
                        partial.append(event.data)
                        if event.message_finished:
                            text = "".join(partial)
                            partial, size = [], 0
                            self._incoming(text)
                    elif isinstance(event, BytesMessage):
                        self._fail(Code.UNSUPPORTED_DATA, "binary messages are not accepted "
                                                          "here; send text (JSON)")
                    elif isinstance(event, Ping) and self._spend():
                        self._pong = bytes(event.payload)
                        self._wake.set()
                    # A Pong needs nothing: hearing anything (_heard) is the answer.
        except (OSError, LocalProtocolError):
            self._set_broken()

    def _on_close(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer it
            self._close_received = True
            code = event.code if 1000 <= event.code < 5000 and event.code not in (
                1004, 1005, 1006, 1015) else Code.NORMAL
            self._begin_close(code, "", drop=True)
        elif state is ConnectionState.CLOSED:  # the answer to our close
            self._close_received = True
        else:  # wsproto found a protocol error (state still OPEN)
            self._fail(event.code, event.reason or "protocol error")
            self._close_received = True  # the stream is unusable: do not wait for more
        self._changed.set()

    def _spend(self) -> bool:
        """Take one token from the bucket; a client out of tokens is closed (1008)."""
        now = time.monotonic()
        self._tokens = min(float(self.limits.burst),
                           self._tokens + (now - self._refilled) * self.limits.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self._fail(Code.POLICY_VIOLATION, f"too many messages (at most "
                                              f"{self.limits.rate:g} per second)")
            return False
        self._tokens -= 1.0
        return True

    def _incoming(self, text: str) -> None:
        if not self._spend():
            return
        self.received += 1
        try:
            self._inbox.put_nowait(text)
        except asyncio.QueueFull:
            self._fail(Code.POLICY_VIOLATION, f"too many messages not yet handled "
                                              f"(at most {self.limits.max_incoming})")
            return
        self._changed.set()

    # ---- writing --------------------------------------------------------------------

    def _next_frame(self) -> tuple[bytes, bool] | None:
        """The next frame to write and whether it is our close."""
        conn = self._conn
        if self._closing is not None and self._drop and not self._close_sent:
            return self._close_frame(), True
        if self._close_sent:
            return None
        if self._pong is not None:
            payload, self._pong = self._pong, None
            return conn.send(Pong(payload=payload)), False
        if self._ping is not None:
            payload, self._ping = self._ping, None
            return conn.send(Ping(payload=payload)), False
        if self._out:
            slot, payload = self._out.popitem(last=False)
            if slot[0] == "o":
                self._ordered -= 1
                self._space.set()
            self.sent += 1
            return conn.send(TextMessage(data=dumps(payload))), False
        if self._closing is not None:
            return self._close_frame(), True
        return None

    def _close_frame(self) -> bytes:
        code, reason = self._closing or (Code.NORMAL, "")
        try:
            return self._conn.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            return b""

    async def _write_loop(self) -> None:
        writer = self.stream.writer
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while (frame := self._next_frame()) is not None:
                    data, is_close = frame
                    if data:
                        writer.write(data)
                        async with asyncio.timeout(self.limits.write_timeout):
                            await writer.drain()
                    if is_close:
                        self._close_sent = True
                        self._changed.set()
                        return
        except TimeoutError:
            log.info("websocket.write_timeout", caller=self.identity.name,
                     seconds=self.limits.write_timeout)
            self._set_broken()
        except (OSError, LocalProtocolError):
            self._set_broken()

    # ---- keepalive ------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """Ping after `ping_interval` of silence; end the connection when the client then
        says nothing (no pong, no message) for `ping_timeout`."""
        limits = self.limits
        n = 0
        while True:
            idle = time.monotonic() - self._heard
            if idle < limits.ping_interval:
                await asyncio.sleep(limits.ping_interval - idle)
                continue
            n += 1
            self._ping = str(n).encode()
            self._wake.set()
            asked = time.monotonic()
            await asyncio.sleep(limits.ping_timeout)
            if self._heard < asked:
                log.info("websocket.ping_timeout", caller=self.identity.name)
                self._set_broken()
                return
