"""The WebSocket layer (backendai/websocket.py) on a real HttpServer on 127.0.0.1 port 0,
driven by a plain client (the `websockets` package) and by raw sockets for what a
well-behaved client never sends: bad handshakes, unmasked, binary, oversized and
invalid frames, floods, clients that never read or never answer a ping."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, TextMessage

from backendai.auth import Role, Token, Tokens
from backendai.http_router import Router, open_access
from backendai.http_server import HttpServer, Request, Upgrade
from backendai.listen import ListenAddress
from backendai.websocket import Code, ConnectionClosed, Limits, WebSocket, websocket

ADMIN, VIEWER = "admin-secret-1", "viewer-secret-2"


@dataclass
class Apps:
    """The endpoints the tests talk to; each records what its sessions saw."""

    limits: Limits
    sessions: list[WebSocket] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    publish_go: asyncio.Event = field(default_factory=asyncio.Event)
    published: int = 0
    ordered_sent: int = 0
    max_queued: int = 0
    app_error: list[BaseException] = field(default_factory=list)

    def router(self) -> Router:
        r = Router()
        for path, app in (("/echo", self.echo), ("/hello", self.hello),
                          ("/coalesce", self.coalesce), ("/ordered", self.ordered),
                          ("/boom", self.boom)):
            r.add("GET", path, self._route(app), auth=open_access, query=("n",))
        return r

    def _route(self, app: Callable[[WebSocket], Awaitable[None]],
               ) -> Callable[[Request], Awaitable[Upgrade]]:
        async def handler(req: Request) -> Upgrade:
            async def tracked(ws: WebSocket) -> None:
                self.sessions.append(ws)
                try:
                    await app(ws)
                finally:
                    self.ended.set()
            return websocket(req, tracked, limits=self.limits)
        return handler

    async def echo(self, ws: WebSocket) -> None:
        while True:
            text = await ws.receive()
            await ws.send(text.upper())

    async def hello(self, ws: WebSocket) -> None:
        await ws.send({"hello": ws.identity.name,
                       "role": ws.identity.role.value if ws.identity.role else None})
        while True:
            await ws.receive()

    async def coalesce(self, ws: WebSocket) -> None:
        """Publish 20,000 updates of 10 kB over 10 keys (200 MB if nothing were dropped),
        letting the writer run after each, then the final value of each key, then
        wait."""
        await self.publish_go.wait()
        pad = "x" * 10_000
        for i in range(20_000):
            ws.publish(f"k{i % 10}", {"key": f"k{i % 10}", "n": i, "pad": pad})
            self.published += 1
            self.max_queued = max(self.max_queued, len(ws._out))
            await asyncio.sleep(0)
        for k in range(10):
            ws.publish(f"k{k}", {"key": f"k{k}", "n": "final"})
        await ws.receive()

    async def ordered(self, ws: WebSocket) -> None:
        for i in range(2000):
            await ws.send({"i": i, "pad": "x" * 20_000})
            self.ordered_sent += 1
        await ws.receive()

    async def boom(self, ws: WebSocket) -> None:
        raise RuntimeError("a bug in the app")


@dataclass
class Served:
    server: HttpServer
    apps: Apps
    port: int

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    servers: list[HttpServer] = []

    async def make(tokens: Tokens | None = None, **limits: Any) -> Served:
        apps = Apps(Limits(**limits))
        server = HttpServer(ListenAddress("127.0.0.1", 0), apps.router(), token=tokens)
        _, port = await server.start()
        servers.append(server)
        return Served(server, apps, port)

    yield make
    for server in servers:
        await server.stop(grace=1.0)


def two_tokens() -> Tokens:
    return Tokens([Token(ADMIN.encode(), name="ops"),
                   Token(VIEWER.encode(), name="viewer", role=Role.READ)])


# ---- raw helpers -------------------------------------------------------------------------

def key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def handshake_bytes(path: str, *, version: str = "13", ws_key: str | None = None,
                    extra: str = "", host: str = "127.0.0.1") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: {version}\r\n"
            f"Sec-WebSocket-Key: {ws_key if ws_key is not None else key()}\r\n"
            f"{extra}\r\n").encode()


class Raw:
    """A hand-driven client on a plain socket (read only when a test says so, so the
    server's writes really block): frames made by wsproto's client side (masked) or by
    hand (to break the rules)."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.conn = Connection(ConnectionType.CLIENT)
        self.conn.receive_data(rest)
        self.partial = ""

    @classmethod
    async def open(cls, port: int, path: str, *, rcvbuf: int = 0, extra: str = "",
                   host: str = "127.0.0.1") -> tuple[Raw, int, dict[str, str]]:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, handshake_bytes(path, extra=extra, host=host))
        data = b""
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in data:
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: nothing more is read
                assert chunk, "closed during the handshake"
                data += chunk
        lines = data.decode().rstrip("\r\n").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        return cls(sock, b""), int(lines[0].split()[1]), headers

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send(self, event: Any) -> None:
        await self.write(self.conn.send(event))

    async def read(self) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, 65536)

    async def events(self, timeout: float = 10) -> list[Any]:
        """Read until at least one event; all events then parsed."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.read()
                self.conn.receive_data(data or None)
                got = list(self.conn.events())
                if got or not data:
                    return got

    async def messages(self) -> list[str]:
        """The text messages completed by the next read (assembled from fragments)."""
        done = []
        for ev in await self.events():
            assert isinstance(ev, TextMessage), ev
            self.partial += ev.data
            if ev.message_finished:
                done.append(self.partial)
                self.partial = ""
        return done

    async def until_close(self, timeout: float = 10) -> tuple[list[Any], CloseConnection]:
        seen: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                for ev in await self.events():
                    if isinstance(ev, CloseConnection):
                        return seen, ev
                    seen.append(ev)

    async def at_eof(self, timeout: float = 10) -> bool:
        async with asyncio.timeout(timeout):
            while data := await self.read():
                self.conn.receive_data(data)
        return True

    async def close(self) -> None:
        self.sock.close()


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame made by hand (client frames must be masked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    m = os.urandom(4)
    return head + m + bytes(b ^ m[i % 4] for i, b in enumerate(payload))


async def raw_http(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """One answer (its head, and its body by Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().rstrip("\r\n").split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(lines[0].split()[1]), headers, body


# ---- handshake -------------------------------------------------------------------------

async def test_echo_with_a_plain_client(serve) -> None:
    s = await serve()
    async with connect(s.url("/echo")) as ws:
        for text in ("hello", "ünïcode ✓", "x" * 60_000):
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 10) == text.upper()
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
    await asyncio.wait_for(s.apps.ended.wait(), 10)


@pytest.mark.parametrize(("request_bytes", "status", "needle"), [
    (handshake_bytes("/echo", version="8"), 426, "version"),
    (handshake_bytes("/echo", ws_key="not base64!"), 400, "Sec-WebSocket-Key"),
    (handshake_bytes("/echo", ws_key=base64.b64encode(b"short").decode()), 400, "16 bytes"),
    (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 400,
     "Upgrade must be websocket"),
    (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", 400, "Connection"),
    (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 426, "websocket"),
    (handshake_bytes("/echo", extra="Origin: http://evil.example\r\n"), 403, "cross-origin"),
    (handshake_bytes("/echo", extra="Origin: null\r\n"), 403, "cross-origin"),
    (handshake_bytes("/echo", host="rebound.example:1",
                     extra="Origin: http://rebound.example:1\r\n"), 403, "IP address"),
], ids=["old-version", "bad-key", "short-key", "h2c", "connection-keep-alive", "no-upgrade",
        "cross-origin", "origin-null", "dns-rebinding"])  # fixed ids: the keys are random
async def test_bad_handshakes_get_a_clear_http_error(serve, request_bytes, status, needle):
    s = await serve()
    code, headers, body = await raw_http(s.port, request_bytes)
    assert code == status, body
    assert needle in json.loads(body)["error"]
    if status == 426 and b"version" in request_bytes.lower() and b": 8" in request_bytes:
        assert headers["sec-websocket-version"] == "13"
    assert s.apps.sessions == []


async def test_same_origin_browsers_are_welcome(serve) -> None:
    s = await serve()
    for origin in (f"http://127.0.0.1:{s.port}", f"http://localhost:{s.port}"):
        host = origin.removeprefix("http://")
        raw, status, _ = await Raw.open(s.port, "/echo", host=host,
                                        extra=f"Origin: {origin}\r\n")
        try:
            assert status == 101, (origin, host)
        finally:
            await raw.close()
    # with a token, a host name is fine too (the token is what lets the caller in)
    t = await serve(two_tokens())
    code, _, _ = await raw_http(t.port, handshake_bytes(
        f"/hello?token={ADMIN}", host="ops.example:1",
        extra="Origin: http://ops.example:1\r\n"))
    assert code == 101


# ---- auth ------------------------------------------------------------------------------

async def test_no_or_a_wrong_token_is_closed_with_1008_before_any_data(serve) -> None:
    s = await serve(two_tokens())
    for path, headers in (("/hello", {}), ("/hello?token=wrong", {}),
                          ("/hello", {"Authorization": "Bearer wrong"}),
                          ("/hello", {"Authorization": f"Basic {ADMIN}"})):
        async with connect(s.url(path), additional_headers=headers) as ws:
            with pytest.raises(ClientClosed) as got:
                await asyncio.wait_for(ws.recv(), 10)
            assert got.value.rcvd is not None
            assert (got.value.rcvd.code, got.value.rcvd.reason) == (
                1008, "missing or invalid bearer token")
    assert s.apps.sessions == []  # the app never ran


async def test_token_in_the_query_or_header_names_the_caller(serve) -> None:
    s = await serve(two_tokens())
    cases = ((f"/hello?token={ADMIN}", {}, ("ops", "admin")),
             (f"/hello?token={VIEWER}", {}, ("viewer", "read")),
             ("/hello", {"Authorization": f"Bearer {VIEWER}"}, ("viewer", "read")),
             ("/hello?token=wrong", {"Authorization": f"Bearer {ADMIN}"}, ("ops", "admin")))
    for path, headers, (name, role) in cases:
        with capture_logs() as logs:
            async with connect(s.url(path), additional_headers=headers) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello == {"hello": name, "role": role}
        assert ADMIN not in repr(logs) and VIEWER not in repr(logs)


async def test_open_server_lets_everyone_in_as_the_anonymous_admin(serve) -> None:
    s = await serve()
    async with connect(s.url("/hello")) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {
            "hello": "anonymous", "role": "admin"}


# ---- bad frames ------------------------------------------------------------------------

async def test_binary_is_closed_with_1003(serve) -> None:
    s = await serve()
    async with connect(s.url("/echo")) as ws:
        await ws.send(b"\x00\x01binary")
        with pytest.raises(ClientClosed) as got:
            await asyncio.wait_for(ws.recv(), 10)
    assert got.value.rcvd is not None and got.value.rcvd.code == 1003


async def test_oversized_message_is_closed_with_1009_without_buffering_it(serve) -> None:
    s = await serve(max_message=4096)
    async with connect(s.url("/echo"), max_size=None) as ws:
        await ws.send("y" * 4096)
        assert await asyncio.wait_for(ws.recv(), 10) == "Y" * 4096
        await ws.send("z" * 4097)
        with pytest.raises(ClientClosed) as got:
            await asyncio.wait_for(ws.recv(), 10)
    assert got.value.rcvd is not None and got.value.rcvd.code == 1009
    # a frame announcing 1 GiB: refused as its first bytes arrive, nothing more is kept
    raw, status, _ = await Raw.open(s.port, "/echo")
    assert status == 101
    head = frame(0x1, b"a" * 70_000)[:14]  # 2 + 8 length bytes + 4 mask bytes
    mask = head[10:14]
    head = head[:2] + struct.pack("!Q", 1 << 30) + mask
    await raw.write(head + bytes(b ^ mask[i % 4] for i, b in enumerate(b"a" * 8000)))
    _, close = await raw.until_close()
    assert close.code == 1009
    await raw.close()


async def test_fragmented_oversized_message_is_closed_with_1009(serve) -> None:
    s = await serve(max_message=4096)
    raw, _, _ = await Raw.open(s.port, "/echo")
    await raw.write(frame(0x1, b"a" * 3000, fin=False) + frame(0x0, b"b" * 3000))
    _, close = await raw.until_close()
    assert close.code == 1009
    await raw.close()


@pytest.mark.parametrize(("data", "code"), [
    (frame(0x1, b"hi", mask=False), 1002),  # client frames must be masked
    (frame(0x1, b"\xff\xfe not utf-8"), 1007),
    (frame(0x9, b"p" * 200), 1002),  # a control frame over 125 bytes
    (frame(0x3, b"reserved opcode"), 1002),
], ids=["unmasked", "not-utf8", "long-control", "reserved-opcode"])  # fixed ids: masks are random
async def test_protocol_errors_are_closed_with_their_code(serve, data, code) -> None:
    s = await serve()
    raw, _, _ = await Raw.open(s.port, "/echo")
    await raw.write(data)
    _, close = await raw.until_close()
    assert close.code == code
    await raw.close()
    await asyncio.wait_for(s.apps.ended.wait(), 10)
    async with connect(s.url("/echo")) as ws:  # the server is fine
        await ws.send("ok")
        assert await asyncio.wait_for(ws.recv(), 10) == "OK"


async def flood(ws: Any, n: int) -> None:
    """Send n messages, then wait for one (the server's close ends both)."""
    for i in range(n):
        await ws.send(f"message {i}")
    await asyncio.wait_for(ws.recv(), 10)


async def test_a_flood_of_client_messages_is_closed_with_1008(serve) -> None:
    s = await serve(rate=50, burst=100)
    async with connect(s.url("/hello")) as ws:
        await asyncio.wait_for(ws.recv(), 10)
        with pytest.raises(ClientClosed) as got:
            await flood(ws, 100_000)
    assert got.value.rcvd is not None and got.value.rcvd.code == 1008
    assert "too many messages" in got.value.rcvd.reason
    assert s.apps.sessions[0].received <= 101


async def test_unread_messages_are_bounded(serve) -> None:
    """/hello does take its messages; /coalesce does not until it is told: the queue of
    messages the app has not taken is at most max_incoming."""
    s = await serve(max_incoming=4, rate=1000, burst=1000)
    async with connect(s.url("/coalesce")) as ws:
        with pytest.raises(ClientClosed) as got:
            await flood(ws, 50)
    assert got.value.rcvd is not None and got.value.rcvd.code == 1008
    assert "not yet handled" in got.value.rcvd.reason


async def test_a_ping_flood_is_answered_with_at_most_one_pong_each_and_then_closed(serve):
    s = await serve(rate=100, burst=200)
    raw, _, _ = await Raw.open(s.port, "/echo")
    for i in range(1000):
        await raw.send(Ping(payload=str(i).encode()))
    seen, close = await raw.until_close()
    assert close.code == 1008
    assert len(seen) <= 201
    await raw.close()


# ---- slow readers ----------------------------------------------------------------------

async def test_a_reader_that_does_not_read_gets_the_latest_value_per_key(serve) -> None:
    s = await serve()
    raw, status, _ = await Raw.open(s.port, "/coalesce", rcvbuf=4096)
    assert status == 101
    s.apps.publish_go.set()
    deadline = time.monotonic() + 20
    while s.apps.published < 20_000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    session = s.apps.sessions[0]
    # the client has read nothing: at most one message per key ever waited in the server
    assert s.apps.max_queued <= 10
    assert session.coalesced > 15_000
    assert session.sent < 2000  # what the sockets took: a few MB, not 200
    latest: dict[str, Any] = {}
    received = 0
    async with asyncio.timeout(20):
        while sorted(latest.values(), key=str) != ["final"] * 10:
            for text in await raw.messages():
                msg = json.loads(text)
                latest[msg["key"]] = msg["n"]
                received += 1
    assert received <= session.sent <= 2010
    await raw.close()


async def test_ordered_sends_wait_for_a_slow_reader_and_arrive_in_order(serve) -> None:
    s = await serve(max_pending=8)
    raw, _, _ = await Raw.open(s.port, "/ordered", rcvbuf=4096)
    await asyncio.sleep(0.5)  # give the app time to fill what it may (not a sync point)
    stuck = s.apps.ordered_sent
    assert stuck < 200, "send() did not wait for the reader"
    session = s.apps.sessions[0]
    assert session._ordered <= 8
    got: list[int] = []
    async with asyncio.timeout(30):
        while len(got) < 2000:
            got += [json.loads(text)["i"] for text in await raw.messages()]
    assert got == list(range(2000))
    await raw.close()


async def test_a_client_that_takes_nothing_is_dropped_after_the_write_timeout(serve):
    s = await serve(write_timeout=0.5, max_pending=4)
    raw, _, _ = await Raw.open(s.port, "/ordered", rcvbuf=4096)
    await asyncio.wait_for(s.apps.ended.wait(), 10)
    assert s.apps.sessions[0].closed
    await raw.close()
    async with connect(s.url("/echo")) as ws:  # the server is fine
        await ws.send("ok")
        assert await asyncio.wait_for(ws.recv(), 10) == "OK"


# ---- keepalive and close ---------------------------------------------------------------

async def test_idle_clients_are_pinged_and_silent_ones_dropped(serve) -> None:
    s = await serve(ping_interval=0.2, ping_timeout=0.3)
    async with connect(s.url("/echo"), ping_interval=None) as ws:  # it answers pings
        await asyncio.sleep(1.2)  # several ping rounds pass (waiting is the point)
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 10) == "STILL HERE"
    raw, _, _ = await Raw.open(s.port, "/echo")  # reads, but never answers
    started = time.monotonic()
    events = await raw.events()
    assert any(isinstance(e, Ping) for e in events)
    assert await raw.at_eof()
    assert time.monotonic() - started < 3
    await raw.close()


async def test_the_clients_close_is_answered(serve) -> None:
    s = await serve()
    async with connect(s.url("/echo")) as ws:
        await ws.send("a")
        await ws.recv()
        await ws.close(code=4001, reason="bye")
    assert ws.close_code == 4001
    await asyncio.wait_for(s.apps.ended.wait(), 10)


async def test_a_stopping_server_closes_with_1001(serve) -> None:
    s = await serve()
    async with connect(s.url("/echo")) as ws:
        await ws.send("a")
        await ws.recv()
        started = time.monotonic()
        await asyncio.wait_for(s.server.stop(grace=5), 10)
        assert time.monotonic() - started < 2
        with pytest.raises(ClientClosed) as got:
            await asyncio.wait_for(ws.recv(), 10)
    assert got.value.rcvd is not None and got.value.rcvd.code == 1001


async def test_an_app_that_fails_closes_with_1011_and_logs(serve) -> None:
    s = await serve()
    with capture_logs() as logs:
        async with connect(s.url("/boom")) as ws:
            with pytest.raises(ClientClosed) as got:
                await asyncio.wait_for(ws.recv(), 10)
    assert got.value.rcvd is not None
    assert (got.value.rcvd.code, got.value.rcvd.reason) == (1011, "internal error")
    assert any(e["event"] == "websocket.app_error" for e in logs)


async def test_receive_raises_once_closed() -> None:
    exc = ConnectionClosed(Code.POLICY_VIOLATION, "why")
    assert (exc.code, exc.reason) == (1008, "why")
    assert "1008: why" in str(exc)
