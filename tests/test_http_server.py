"""The shared HTTP transport on its own: a real HttpServer on 127.0.0.1 port 0 with a
tiny router, driven by http.client (in a thread) and raw sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from backendai.errors import FailedPrecondition, NotFound
from backendai.http_router import (
    Router,
    json_body,
    loopback_or_token,
    open_access,
    require_token,
)
from backendai.http_server import (
    JSON,
    MAX_BODY,
    MAX_HEAD,
    Caller,
    HttpError,
    HttpServer,
    Request,
    Response,
    Upgrade,
    UpgradedStream,
)
from backendai.listen import ListenAddress
from tests.fixtures.http_calls import Reply, assert_error, http_call, raw_exchange

TOKEN = "tiny-token"
METRICS = b"# TYPE up gauge\nup 1\n"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Tiny:
    """A small app: a few routes that exercise what the transport must carry."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()  # /slow waits for it
        self.entered = asyncio.Event()  # /slow was reached
        self.sessions_ended = asyncio.Event()
        self.seen: list[Request] = []
        r = self.router = Router()
        r.add("GET", "/hello", self.hello)
        r.add("GET", "/health", self.hello, auth=open_access)
        r.add("GET", "/metrics", self.metrics, auth=loopback_or_token)
        r.add("HEAD", "/metrics", self.metrics, auth=loopback_or_token)
        r.add("GET", "/items/(?P<item>[^/]+)", self.item, query=("verbose", "page"))
        r.add("DELETE", "/items/(?P<item>[^/]+)", self.nothing)
        r.add("POST", "/echo", self.echo)
        r.add("GET", "/slow", self.slow)
        r.add("GET", "/boom", self.boom)
        r.add("GET", "/missing", self.missing)
        r.add("GET", "/busy", self.busy)
        r.add("GET", "/teapot", self.teapot)
        r.add("GET", "/upper", self.upgrade)

    async def hello(self, req: Request) -> JSON:
        return {"hello": "world"}

    async def metrics(self, req: Request) -> Response:
        return Response(200, METRICS, METRICS_TYPE, [("Cache-Control", "no-store")])

    async def item(self, req: Request) -> JSON:
        self.seen.append(req)
        return {"item": req.params["item"], "query": req.query,
                "peer": [req.caller.host, req.caller.port]}

    async def nothing(self, req: Request) -> Response:
        return Response(204, content_type="")

    async def echo(self, req: Request) -> JSON:
        return {"got": json_body(req, ("text",))}

    async def slow(self, req: Request) -> JSON:
        self.entered.set()
        await self.gate.wait()
        return {"slow": True}

    async def boom(self, req: Request) -> JSON:
        raise RuntimeError("secret detail")

    async def missing(self, req: Request) -> JSON:
        raise NotFound("no item named 'x'")

    async def busy(self, req: Request) -> JSON:
        raise FailedPrecondition("an update is running")

    async def teapot(self, req: Request) -> JSON:
        raise HttpError(418, "short and stout", [("X-Tea", "earl grey")])

    async def upgrade(self, req: Request) -> Upgrade:
        return Upgrade("upper", self.upper_session, [("X-Session", "1")])

    async def upper_session(self, stream: UpgradedStream) -> None:
        """A toy protocol: echo every chunk in upper case; say "bye" when the server
        stops; end when the client closes."""
        stopping = asyncio.create_task(stream.stopping.wait())
        try:
            while True:
                reading = asyncio.create_task(stream.read())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    await stream.write(b"BYE\n")
                    return
                data = reading.result()
                if not data:
                    return
                await stream.write(data.upper())
        finally:
            stopping.cancel()
            self.sessions_ended.set()


@dataclass
class Served:
    server: HttpServer
    app: Tiny
    port: int

    async def call(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        return await asyncio.to_thread(http_call, self.port, method, path, body, headers or {})


def split_responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Cut a byte stream of HTTP/1.1 responses framed by Content-Length apart."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, raw[:length]))
        raw = raw[length:]
    return out


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().rstrip("\r\n").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    servers: list[HttpServer] = []

    async def make(**options: Any) -> Served:
        app = Tiny()
        server = HttpServer(ListenAddress("127.0.0.1", 0), app.router, **options)
        host, port = await server.start()
        servers.append(server)
        assert (host, port > 0) == ("127.0.0.1", True)
        return Served(server, app, port)

    yield make
    for server in servers:
        await server.stop(grace=1.0)


@pytest.fixture
async def served(serve: Callable[..., Awaitable[Served]]) -> Served:
    return await serve()


# -- answers ---------------------------------------------------------------------------

async def test_keep_alive_json_bytes_head_and_no_content(served: Served) -> None:
    def run() -> list[tuple[int, str | None, str | None, str | None, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        out = []
        try:
            conn.connect()
            sock = conn.sock
            for method, path in [("GET", "/hello"), ("GET", "/metrics"), ("HEAD", "/metrics"),
                                 ("DELETE", "/items/a"), ("GET", "/hello")] * 3:
                conn.request(method, path)
                resp = conn.getresponse()
                out.append((resp.status, resp.getheader("Content-Type"),
                            resp.getheader("Content-Length"),
                            resp.getheader("Cache-Control"), resp.read()))
                assert conn.sock is sock, "the server closed the keep-alive connection"
        finally:
            conn.close()
        return out

    replies = await asyncio.to_thread(run)
    size = str(len(METRICS))
    assert replies == [
        (200, "application/json", "18", None, b'{"hello": "world"}'),
        (200, METRICS_TYPE, size, "no-store", METRICS),
        (200, METRICS_TYPE, size, "no-store", b""),  # HEAD: the headers only
        (204, None, None, None, b""),
        (200, "application/json", "18", None, b'{"hello": "world"}'),
    ] * 3


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    raw = await raw_exchange(served.port, (
        b"GET /items/one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 15\r\n\r\n{\"text\": \"hi\"}\n"
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    answers = split_responses(raw)
    item = json.loads(answers[0][2])
    assert (item["item"], item["query"], item["peer"][0]) == ("one", {}, "127.0.0.1")
    assert [(status, json.loads(body)) for status, _, body in answers[1:]] == [
        (200, {"got": {"text": "hi"}}),
        (404, {"success": False, "error": "no endpoint '/nope'"}),
        (200, {"hello": "world"}),
    ]
    assert answers[-1][1]["connection"] == "close"


async def test_unknown_path_is_404_and_wrong_method_405_with_allow(served: Served) -> None:
    assert_error(await served.call("GET", "/nope"), 404, "no endpoint '/nope'")
    assert_error(await served.call("GET", "/hello/"), 404, "no endpoint")
    reply = await served.call("POST", "/items/a")
    assert_error(reply, 405, "method POST not allowed here (allowed: DELETE, GET)")
    assert reply.headers["Allow"] == "DELETE, GET"
    reply = await served.call("HEAD", "/hello")  # no HEAD route: 405, headers only
    assert (reply.status, reply.headers["Allow"], reply.body) == (405, "GET", b"")


async def test_path_params_are_decoded_and_the_query_is_strict(served: Served) -> None:
    reply = await served.call("GET", "/items/a%40b?verbose=1&page=")
    assert reply.status == 200
    assert reply.json()["item"] == "a@b"
    assert reply.json()["query"] == {"verbose": "1", "page": ""}
    assert_error(await served.call("GET", "/items/a?debug=1"), 400,
                 "unknown query parameter 'debug' (allowed: verbose, page)")
    assert_error(await served.call("GET", "/hello?x=1"), 400, "(allowed: none)")
    assert_error(await served.call("GET", "/items/a?page=1&page=2"), 400,
                 "query parameter 'page' given more than once")
    assert_error(await served.call("GET", "/items/a?verbose"), 400, "malformed")
    assert_error(await served.call("GET", "/items/%ff"), 400, "malformed")
    assert_error(await served.call("GET", "/items/a?" + "&".join(["page=1"] * 40)), 400,
                 "malformed")


async def test_json_body_helper(served: Served) -> None:
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    reply = await served.call("POST", "/echo", b'{"text": "x"}', json_type)
    assert (reply.status, reply.json()) == (200, {"got": {"text": "x"}})
    assert_error(await served.call("POST", "/echo", b'{"text": "x"}',
                                   {"Content-Type": "text/plain"}), 415, "application/json")
    assert_error(await served.call("POST", "/echo", b'{"text": "x"}'), 415)
    assert_error(await served.call("POST", "/echo", b'{"text": ', json_type), 400,
                 "not valid JSON")
    assert_error(await served.call("POST", "/echo", b"[" * 50_000, json_type), 400,
                 "not valid JSON")
    assert_error(await served.call("POST", "/echo", b'"x"', json_type), 400, "JSON object")
    assert_error(await served.call("POST", "/echo", b'{"text": "x", "more": 1}', json_type),
                 400, "unknown field 'more' (allowed: text)")


async def test_errors_keep_their_status_and_unexpected_ones_say_internal(
        served: Served) -> None:
    assert_error(await served.call("GET", "/missing"), 404, "no item named 'x'")
    assert_error(await served.call("GET", "/busy"), 409, "an update is running")
    reply = await served.call("GET", "/teapot")
    assert_error(reply, 418, "short and stout")
    assert reply.headers["X-Tea"] == "earl grey"
    with capture_logs() as logs:
        reply = await served.call("GET", "/boom")
    assert assert_error(reply, 500)["error"] == "internal error"
    assert b"secret" not in reply.body
    assert b"Traceback" not in reply.body
    failures = [e for e in logs if e["event"] == "http.internal_error"]
    assert len(failures) == 1
    assert failures[0]["exc_info"] is True
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [500]
    assert (await served.call("GET", "/hello")).status == 200


# -- who is asking ---------------------------------------------------------------------

async def test_token_and_per_route_policies(serve: Any) -> None:
    served = await serve(token=TOKEN.encode())
    good = {"Authorization": f"Bearer {TOKEN}"}
    for path in ["/hello", "/items/a", "/nope", "/items/a/b"]:
        reply = await served.call("GET", path)
        assert_error(reply, 401, "missing or invalid bearer token")
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert_error(await served.call("POST", "/hello"), 401)  # no probing for 405 either
    assert_error(await served.call("GET", "/hello", headers={"Authorization": "Bearer no"}),
                 401)
    assert (await served.call("GET", "/hello", headers=good)).status == 200
    assert_error(await served.call("GET", "/nope", headers=good), 404)
    assert_error(await served.call("POST", "/hello", headers=good), 405)
    assert (await served.call("GET", "/health")).status == 200  # open
    assert (await served.call("GET", "/metrics")).status == 200  # open on loopback
    assert served.app.seen == []


def test_policies_read_the_caller() -> None:
    def request(host: str, authenticated: bool) -> Request:
        return Request("GET", "/metrics", "", {}, b"", Caller(host, 4000, authenticated))

    assert loopback_or_token(request("127.0.0.1", authenticated=False))
    assert loopback_or_token(request("::1", authenticated=False))
    assert not loopback_or_token(request("10.0.0.7", authenticated=False))
    assert not loopback_or_token(request("", authenticated=False))
    assert loopback_or_token(request("10.0.0.7", authenticated=True))
    assert not require_token(request("127.0.0.1", authenticated=False))
    assert open_access(request("10.0.0.7", authenticated=False))
    assert str(Caller("::1", 5, authenticated=True)) == "[::1]:5"


async def test_the_handler_sees_the_peer_address(serve: Any) -> None:
    served = await serve(token=TOKEN.encode())

    def run() -> tuple[tuple[str, int], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            conn.request("GET", "/items/x", headers={"Authorization": f"Bearer {TOKEN}"})
            local = conn.sock.getsockname()
            return local, json.loads(conn.getresponse().read())
        finally:
            conn.close()

    local, data = await asyncio.to_thread(run)
    assert data["peer"] == [local[0], local[1]]
    caller = served.app.seen[0].caller
    assert (caller.host, caller.port, caller.authenticated) == (local[0], local[1], True)
    assert caller.is_loopback


# -- the connection: limits, slow clients, 100-continue --------------------------------

async def test_oversized_head_is_431_and_body_413(served: Served) -> None:
    raw = await raw_exchange(served.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: "
                             + b"a" * (MAX_HEAD + 100) + b"\r\n\r\n")
    [(status, headers, body)] = split_responses(raw)
    assert (status, headers["connection"]) == (431, "close")
    assert str(MAX_HEAD) in json.loads(body)["error"]
    # A head that fits h11's buffer in one piece but is over the limit in sum.
    many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(20))
    [(status, _, _)] = split_responses(await raw_exchange(
        served.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))
    assert status == 431
    json_type = {"Content-Type": "application/json"}
    big = b'{"text": "' + b"1" * MAX_BODY + b'"}'
    assert_error(await served.call("POST", "/echo", big, json_type), 413, str(MAX_BODY))
    chunks = iter([b"x" * 16384] * 8)  # chunked, no Content-Length
    assert_error(await served.call("POST", "/echo", chunks, json_type), 413)
    assert (await served.call("GET", "/hello")).status == 200


async def test_limits_are_options(serve: Any) -> None:
    served = await serve(max_body=10, max_head=2048)
    json_type = {"Content-Type": "application/json"}
    assert_error(await served.call("POST", "/echo", b'{"text": "12345"}', json_type), 413,
                 "larger than 10 bytes")
    assert_error(await served.call("GET", "/hello", headers={"X-Pad": "p" * 3000}), 431,
                 "2048")


async def test_slow_client_gets_408_and_an_idle_one_is_dropped(serve: Any) -> None:
    served = await serve(request_timeout=0.3)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", served.port)
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        slow_w.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        assert (await served.call("GET", "/hello")).status == 200
        async with asyncio.timeout(10):
            assert await idle_r.read() == b""
            [(status, headers, body)] = split_responses(await slow_r.read())
        assert (status, headers["connection"]) == (408, "close")
        assert json.loads(body) == {"success": False, "error": "request not received in time"}
    finally:
        for w in (idle_w, slow_w):
            w.close()
            await w.wait_closed()


async def test_connections_over_the_limit_get_503_with_retry_after(serve: Any) -> None:
    served = await serve(max_connections=1)
    held = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)

    def get(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        resp.read()
        return resp.status

    try:
        assert await asyncio.to_thread(get, held) == 200
        reply = await served.call("GET", "/hello")
        assert_error(reply, 503, "too many connections")
        assert (reply.headers["Retry-After"], reply.headers["Connection"]) == ("1", "close")
        assert await asyncio.to_thread(get, held) == 200
    finally:
        held.close()


async def test_expect_100_continue(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 13\r\nExpect: 100-continue\r\n\r\n")
        assert (await read_head(reader))[0] == 100
        writer.write(b'{"text": "y"}')
        status, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        assert (status, json.loads(body)) == (200, {"got": {"text": "y"}})
    finally:
        writer.close()
        await writer.wait_closed()


async def test_garbage_is_400_and_a_taken_port_names_the_address(served: Served) -> None:
    raw = await raw_exchange(served.port, b"\x16\x03\x01zz\r\n\r\n")
    [(status, _, body)] = split_responses(raw)
    assert (status, json.loads(body)["error"]) == (400, "malformed HTTP request")
    taken = HttpServer(ListenAddress("127.0.0.1", served.port), Router())
    with pytest.raises(OSError, match=f"cannot bind HTTP to 127.0.0.1:{served.port}"):
        await taken.bind()


# -- stop ------------------------------------------------------------------------------

async def test_stop_lets_a_request_in_flight_finish(served: Served) -> None:
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        in_flight = asyncio.create_task(served.call("GET", "/slow"))
        await asyncio.wait_for(served.app.entered.wait(), 10)
        stopping = asyncio.create_task(served.server.stop(grace=10))
        await asyncio.sleep(0)  # a yield, not a wait: stop() runs up to its first await
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", served.port)
        assert await asyncio.wait_for(idle_r.read(), 10) == b""
        assert not stopping.done()
        served.app.gate.set()
        reply = await asyncio.wait_for(in_flight, 10)
        assert (reply.status, reply.json()) == (200, {"slow": True})
        assert reply.headers["Connection"] == "close"
        await asyncio.wait_for(stopping, 10)
        await asyncio.wait_for(served.server.stop(), 1)  # idempotent
    finally:
        idle_w.close()
        await idle_w.wait_closed()


async def test_stop_cuts_off_a_request_after_grace(served: Served) -> None:
    in_flight = asyncio.create_task(served.call("GET", "/slow"))
    await asyncio.wait_for(served.app.entered.wait(), 10)
    started = time.monotonic()
    await asyncio.wait_for(served.server.stop(grace=0.2), 5)
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(in_flight, 10)


# -- the upgrade seam ------------------------------------------------------------------

UPGRADE = b"GET /upper HTTP/1.1\r\nHost: x\r\nUpgrade: upper\r\nConnection: Upgrade\r\n\r\n"


async def test_upgrade_hands_the_connection_over(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(UPGRADE + b"hello\n")  # the first bytes of the new protocol come along
        status, headers = await read_head(reader)
        assert (status, headers["upgrade"], headers["connection"], headers["x-session"]) == (
            101, "upper", "Upgrade", "1")
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"HELLO\n"
        writer.write(b"again\n")
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"AGAIN\n"
        writer.write_eof()  # the client is done: the session ends, the server closes
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await asyncio.wait_for(served.app.sessions_ended.wait(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert (await served.call("GET", "/hello")).status == 200


async def test_an_upgrade_route_without_an_upgrade_request_is_426(served: Served) -> None:
    reply = await served.call("GET", "/upper")
    assert_error(reply, 426, "upper")
    assert reply.headers["Upgrade"] == "upper"
    assert not served.app.sessions_ended.is_set()


async def test_stop_tells_upgraded_sessions_and_waits_for_them(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(UPGRADE)
        assert (await read_head(reader))[0] == 101
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 10) == b"X"
        started = time.monotonic()
        await asyncio.wait_for(served.server.stop(grace=10), 10)
        assert time.monotonic() - started < 5, "the session ended on its own, not at grace"
        assert await asyncio.wait_for(reader.read(), 10) == b"BYE\n"
        assert served.app.sessions_ended.is_set()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_upgraded_sessions_count_to_the_connection_limit(serve: Any) -> None:
    served = await serve(max_connections=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(UPGRADE)
        assert (await read_head(reader))[0] == 101
        assert_error(await served.call("GET", "/hello"), 503)
    finally:
        writer.close()
        await writer.wait_closed()

