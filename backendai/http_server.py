"""The one HTTP/1.1 transport of the daemons: h11 parses, asyncio streams carry the bytes.

`HttpServer` owns the sockets and the connections and nothing else: bounded request
heads and bodies, a bounded number of connections (503 beyond), a deadline to receive
each request (408), keep-alive and pipelining, `Expect: 100-continue`, HEAD, a polite
(lingering) close, a graceful stop, and optionally TLS (`ssl_context`: HTTPS, or mutual
TLS when the context wants client certificates). What a request means is the `App`'s business:
a coroutine that takes a `Request` and returns a `Response`, or an `Upgrade` that takes
the connection over (the seam for WebSocket). `backendai/http_router.py` is the usual
app. Errors become JSON answers `{"success": false, "error": "..."}`: an `HttpError`
or a `BackendAIError` with its status, anything else 500 "internal error" and a log
event, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import h11
import structlog

from backendai.auth import (
    ANONYMOUS,
    READ_HTTP_METHODS,
    Identity,
    Role,
    Token,
    Tokens,
    as_tokens,
    bearer_value,
    certificate_subject,
    identify,
)
from backendai.errors import BackendAIError
from backendai.listen import ListenAddress

if TYPE_CHECKING:
    import ssl

log = structlog.get_logger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 30.0  # to receive one complete request, keep-alive idle time included
WRITE_TIMEOUT = 30.0
LINGER = 1.0  # after a final response, read what the client still sends, so it sees no RST
READ_CHUNK = 64 * 1024
# The client's state once its request asked to upgrade. h11 exports it, but its __all__
# misses the name, so mypy does not see it.
MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

JSON = dict[str, Any]
Headers = Sequence[tuple[str, str]]


class HttpError(Exception):
    """A failure of the HTTP layer itself (method, media type, size, auth)."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the peer address and whether it passed the token check.

    `authenticated` is True when the request carried one of the server's bearer tokens
    (header, or the `token` query parameter of a GET), or when the server has no token
    (everyone is let in). `identity` says which token (its name and role; see
    backendai/auth.py). Whether a route needs it is the route's policy
    (http_router.AuthPolicy)."""

    host: str  # the peer's IP address ("" when unknown)
    port: int
    authenticated: bool
    ident: Identity | None = None  # None: the anonymous caller `authenticated` implies

    @property
    def identity(self) -> Identity:
        if self.ident is not None:
            return self.ident
        return Identity(ANONYMOUS, Role.ADMIN if self.authenticated else None, str(self),
                        "http")

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as sent, still percent-encoded
    query_string: str  # after "?", still encoded
    headers: dict[bytes, bytes]  # lower-case names; the first value of each
    body: bytes
    caller: Caller
    # Filled in by the router once a route matched:
    query: dict[str, str] = field(default_factory=dict)  # allowed, each given once
    params: dict[str, str] = field(default_factory=dict)  # the path's named groups, decoded


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"  # "" sends no Content-Type
    headers: Headers = ()  # extra headers, e.g. Cache-Control, ETag, Allow

    @classmethod
    def json(cls, payload: JSON, status: int = 200, headers: Headers = ()) -> Response:
        return cls(status, json.dumps(payload).encode(), "application/json", headers)


def error_response(status: int, message: str, headers: Headers = ()) -> Response:
    return Response.json({"success": False, "error": message}, status, headers)


@dataclass(eq=False)
class UpgradedStream:
    """The connection after a 101 answer, handed to an `Upgrade`'s session.

    `buffered` holds what the client sent after the request head and the server already
    read (a WebSocket client may send its first frame at once); `read()` returns it
    first. `stopping` is set when the server stops: the session should say goodbye
    (e.g. a WebSocket close frame) and return within the stop's grace, or be cancelled.
    No request timeout applies any more: the session keeps its own deadlines. What the
    request said (path params, caller) the handler that returned the `Upgrade` knows:
    it binds what the session needs (e.g. with functools.partial)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffered: bytes
    stopping: asyncio.Event

    async def read(self, n: int = READ_CHUNK) -> bytes:
        """The next bytes from the client (b"" once it closed)."""
        if self.buffered:
            data, self.buffered = self.buffered, b""
            return data
        return await self.reader.read(n)

    async def write(self, data: bytes) -> None:
        await _write(self.writer, data)


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An answer that switches protocols: the server sends `101 Switching Protocols`
    with `Upgrade: <protocol>` and `headers` (e.g. Sec-WebSocket-Accept), then runs
    `session` with the connection; the connection closes when it returns. A client that
    did not ask to upgrade gets 426 instead."""

    protocol: str
    session: Callable[[UpgradedStream], Awaitable[None]]
    headers: Headers = ()


App = Callable[[Request], Awaitable[Response | Upgrade]]


class HttpServer:
    def __init__(self, listen: ListenAddress, app: App, *,
                 token: bytes | Token | Tokens | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT, max_head: int = MAX_HEAD,
                 max_body: int = MAX_BODY, ssl_context: ssl.SSLContext | None = None) -> None:
        """ssl_context: serve HTTPS (the TLS handshake must end within request_timeout;
        a plaintext client gets its connection closed)."""
        self.listen = listen
        self.app = app
        self.ssl_context = ssl_context
        self.tokens = as_tokens(token)  # None: everyone is let in
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.max_head = max_head
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every connection, rejected ones too
        self._served: set[asyncio.Task[None]] = set()  # connections that count to the limit
        self._busy: set[asyncio.Task[None]] = set()  # processing a request, or upgraded
        self._closing = False
        self._stopping = asyncio.Event()  # set once stop() began; upgraded sessions watch it
        self._stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def bind(self) -> tuple[str, int]:
        """Bind (port 0 = any free port) without serving yet; return the bound address."""
        if self._server is None:
            try:
                tls = self.ssl_context
                self._server = await asyncio.start_server(
                    self._accept, self.listen.host, self.listen.port, start_serving=False,
                    ssl=tls, ssl_handshake_timeout=self.request_timeout if tls else None)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot bind HTTP to {self.listen}: "
                                         f"{exc.strerror or exc}") from None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> tuple[str, int]:
        """Bind (unless bind() did) and serve; return the address actually bound."""
        host, port = await self.bind()
        if self._server is not None:  # always, after bind()
            await self._server.start_serving()
        log.debug("http.listening", host=host, port=port)
        return host, port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, let requests in progress (and upgraded sessions, told through
        `stopping`) finish within grace, close the rest."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for task in self._tasks - self._busy:
            task.cancel()  # idle keep-alive or still receiving: nothing is lost
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._server.wait_closed()
        self._stopped.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        over = len(self._served) >= self.max_connections
        task = asyncio.create_task(self._connection(reader, writer, rejected=over))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not over:
            self._served.add(task)
            task.add_done_callback(self._served.discard)

    # -- one connection -------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          *, rejected: bool) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        try:
            if rejected:
                await self._send(conn, writer, error_response(
                    503, "too many connections, retry later", [("Retry-After", "1")]),
                    close=True)
                await _linger(reader, writer)
            else:
                await self._serve(conn, reader, writer)
        except (OSError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away or stopped reading
        except Exception:
            log.exception("http.connection_error")
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(LINGER):
                    await writer.wait_closed()
            writer.transport.abort()  # no-op unless unsent data kept it open

    async def _serve(self, conn: h11.Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = _peer(writer)
        subject = _client_subject(writer)  # once per connection: the handshake is done
        while True:
            got: tuple[h11.Request, bytes] | HttpError | None
            try:
                async with asyncio.timeout(self.request_timeout):
                    got = await self._receive(conn, reader, writer)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # an idle keep-alive connection just ends
                got = HttpError(408, "request not received in time")
            except h11.RemoteProtocolError as exc:
                log.debug("http.protocol_error", error=str(exc))
                got = HttpError(exc.error_status_hint, "malformed HTTP request")
                if exc.error_status_hint == 431:
                    got = HttpError(431, f"request head larger than {self.max_head} bytes")
            except HttpError as exc:  # 413 or 431, before the body was read
                got = exc
            if isinstance(got, HttpError):  # answer, then close: the stream is unusable
                await self._send(conn, writer, error_response(got.status, str(got),
                                                              got.headers), close=True)
                await _linger(reader, writer)
                return
            if got is None:
                return
            event, body = got
            if task is not None:
                self._busy.add(task)
            try:
                request = self._request(event, body, peer, subject)
                can_upgrade = (conn.their_state is MIGHT_SWITCH_PROTOCOL
                               and event.method != b"CONNECT")
                answer = await self._respond(request, can_upgrade=can_upgrade)
                if isinstance(answer, Upgrade):
                    await self._switch(conn, reader, writer, request, answer)
                    return
                await self._send(conn, writer, answer, close=self._closing,
                                 head=event.method == b"HEAD")
            finally:
                if task is not None:
                    self._busy.discard(task)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                await _linger(reader, writer)
                return
            conn.start_next_cycle()

    async def _receive(self, conn: h11.Connection, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> tuple[h11.Request, bytes] | None:
        """One complete request, or None when the client closed between requests."""
        event = await _next_event(conn, reader)
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed
        # h11 bounds a head still arriving; this bounds one that arrived whole.
        if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) \
                > self.max_head:
            raise HttpError(431, f"request head larger than {self.max_head} bytes")
        length = dict(event.headers).get(b"content-length")
        if length is not None and int(length) > self.max_body:
            raise HttpError(413, f"request body larger than {self.max_body} bytes")
        if conn.they_are_waiting_for_100_continue:
            await _write(writer, conn.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[])))
        body = bytearray()
        while isinstance(part := await _next_event(conn, reader), h11.Data):
            body += part.data
            if len(body) > self.max_body:
                raise HttpError(413, f"request body larger than {self.max_body} bytes")
        return event, bytes(body)

    def _request(self, event: h11.Request, body: bytes, peer: tuple[str, int],
                 tls_subject: str = "") -> Request:
        headers: dict[bytes, bytes] = {}
        for name, value in event.headers:
            headers.setdefault(name, value)
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        given = bearer_value(headers.get(b"authorization"))
        if method in READ_HTTP_METHODS:
            # Browsers cannot set headers on a WebSocket: a GET may carry the token as
            # `?token=`. It is taken out here, so no route, log or error ever sees it.
            query, from_query = take_query_token(query)
            given = given if given is not None else from_query
        websocket = headers.get(b"upgrade", b"").lower() == b"websocket"
        where = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        identity = identify(self.tokens, given, peer=where,
                            transport="websocket" if websocket else "http",
                            tls_subject=tls_subject)
        return Request(method, path, query, headers, body,
                       Caller(peer[0], peer[1], identity.authenticated, identity))

    async def _respond(self, request: Request, *, can_upgrade: bool) -> Response | Upgrade:
        """Run the app on one request; every failure becomes a JSON error answer."""
        started = time.monotonic()
        answer: Response | Upgrade
        with structlog.contextvars.bound_contextvars(method=request.method,
                                                     path=request.path[:200],
                                                     peer=str(request.caller)):
            try:
                answer = await self.app(request)
            except HttpError as exc:
                answer = error_response(exc.status, str(exc), exc.headers)
            except BackendAIError as exc:
                status = exc.http_status if 400 <= exc.http_status <= 599 else 500
                answer = error_response(status, str(exc))
            except Exception:
                log.exception("http.internal_error")
                answer = error_response(500, "internal error")
            if isinstance(answer, Upgrade) and not can_upgrade:
                answer = error_response(
                    426, f"this endpoint speaks {answer.protocol} only: send Upgrade: "
                         f"{answer.protocol}", [("Upgrade", answer.protocol)])
            log.debug("http.request", status=101 if isinstance(answer, Upgrade)
                      else answer.status,
                      duration_ms=round((time.monotonic() - started) * 1000, 3))
        return answer

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response, *, close: bool, head: bool = False) -> None:
        bodiless = response.status in (204, 304)
        fields: list[tuple[str, str]] = []
        if response.content_type:
            fields.append(("Content-Type", response.content_type))
        if not bodiless:
            fields.append(("Content-Length", str(len(response.body))))
        fields += response.headers
        if close:
            fields.append(("Connection", "close"))
        data = conn.send(h11.Response(status_code=response.status, headers=fields,
                                      reason=_reason(response.status)))
        if not (head or bodiless):  # an answer to HEAD has the headers only
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        await _write(writer, data)

    async def _switch(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, request: Request, upgrade: Upgrade,
                      ) -> None:
        """Answer 101 and hand the connection to the upgrade's session."""
        await _write(writer, conn.send(h11.InformationalResponse(
            status_code=101, reason=b"Switching Protocols",
            headers=[("Upgrade", upgrade.protocol), ("Connection", "Upgrade"),
                     *upgrade.headers])))
        stream = UpgradedStream(reader, writer, conn.trailing_data[0], self._stopping)
        with structlog.contextvars.bound_contextvars(path=request.path[:200],
                                                     protocol=upgrade.protocol,
                                                     peer=str(request.caller)):
            log.debug("http.upgraded")
            try:
                await upgrade.session(stream)
            except (OSError, TimeoutError):
                pass  # the client went away or stopped reading
            except Exception:
                log.exception("http.session_error")


def take_query_token(query: str) -> tuple[str, bytes | None]:
    """The query string without its `token` parameter, and that token (None when absent
    or given more than once: then no token from the query counts)."""
    if "token" not in query and "%" not in query:
        return query, None
    kept: list[str] = []
    found: list[str] = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key) == "token":
            found.append(value)
        else:
            kept.append(part)
    if len(found) != 1:
        return "&".join(kept), None
    try:
        token = unquote_plus(found[0], errors="strict").encode("ascii")
    except (UnicodeError, ValueError):
        return "&".join(kept), None
    return "&".join(kept), token


def _peer(writer: asyncio.StreamWriter) -> tuple[str, int]:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "", 0


def _client_subject(writer: asyncio.StreamWriter) -> str:
    """The verified TLS client certificate's subject (mutual TLS), else ""."""
    tls = writer.get_extra_info("ssl_object")
    if tls is None:
        return ""
    try:
        return certificate_subject(tls.getpeercert())
    except ValueError:  # no handshake (cannot happen once serving; never fatal)
        return ""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(READ_CHUNK))  # b"" tells h11 the peer closed
    return event


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    async with asyncio.timeout(WRITE_TIMEOUT):
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close politely: send FIN after the answer, then drain what the client still sends
    (bounded), so it reads our answer instead of a connection reset."""
    with contextlib.suppress(OSError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(READ_CHUNK):
                pass
