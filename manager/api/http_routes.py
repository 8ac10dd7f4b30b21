"""The seeds' HTTP JSON API on :3081, translated into ManagerControl calls.

A thin HTTP/1.1 server: h11 parses, asyncio streams carry the bytes. It validates each
request fully, calls the service layer once and renders the answer; the lifecycle
logic lives in control.py, shared with the gRPC servicer. Failures answer
`{"success": false, "error": "..."}` with the error's `http_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11
import structlog

from backendai.auth import Token, as_token, bearer_ok
from backendai.errors import BackendAIError, InvalidArgument, NotFound
from backendai.listen import ListenAddress
from manager.api.control import DEFAULT_LOG_LINES, MAX_LOG_LINES, MAX_STOP_TIMEOUT, ManagerControl
from manager.supervision.states import ServiceStatus, State

log = structlog.get_logger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 30.0  # to receive one complete request, keep-alive idle time included
WRITE_TIMEOUT = 30.0
LINGER = 1.0  # after a final response, read what the client still sends, so it sees no RST
READ_CHUNK = 64 * 1024

JSON = dict[str, Any]
Headers = list[tuple[str, str]]

# What GET /api/services reports as "status" (seed 004) for each supervisor state.
SIMPLE_STATUS = {State.STARTING: "running", State.RUNNING: "running", State.STOPPING: "running",
                 State.STOPPED: "stopped", State.EXITED: "stopped",
                 State.BACKOFF: "failed", State.FATAL: "failed"}


class HttpError(Exception):
    """A failure of the HTTP layer itself (method, media type, size, auth)."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass(frozen=True, slots=True)
class Request:
    query: dict[str, str]
    headers: dict[bytes, bytes]  # lower-case names; the first value of each
    body: bytes
    name: str = ""  # the {name} of /api/services/{name}/...

    def service(self) -> str:
        """The service a request names: the path's {name}, else ?service= (primary)."""
        return self.name or self.query.get("service", "")


Handler = Callable[[Request], Awaitable[JSON]]


def _int(req: Request, key: str, default: int, low: int, high: int) -> int:
    text = req.query.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and low <= int(text) <= high):
        raise InvalidArgument(f"{key} must be an integer between {low} and {high}, "
                              f"got {text[:40]!r}")
    return int(text)


def _seconds(req: Request, key: str, low: float, high: float) -> float | None:
    text = req.query.get(key)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text) or not low <= float(text) <= high:
        raise InvalidArgument(f"{key} must be a number of seconds between {low:g} and "
                              f"{high:g}, got {text[:40]!r}")
    return float(text)


def _flag(req: Request, key: str) -> bool:
    text = req.query.get(key, "false")
    if text not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"{key} must be true or false, got {text[:40]!r}")
    return text in ("true", "1")


def _json_object(req: Request, allowed: tuple[str, ...]) -> JSON:
    media_type = req.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if media_type != b"application/json":
        raise HttpError(415, "Content-Type must be application/json")
    try:
        data = json.loads(req.body)
    except (ValueError, RecursionError):
        raise InvalidArgument("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("request body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0][:40]!r} (allowed: {', '.join(allowed)})")
    return data


def service_json(st: ServiceStatus, now: float) -> JSON:
    """One service as GET /api/services (seed 004) reports it."""
    return {"name": st.name, "status": SIMPLE_STATUS[st.state], "state": st.state.value,
            "pid": st.pid or None, "restarts": st.restarts,
            "uptime_seconds": round(max(0.0, now - st.started_at), 3) if st.started_at else 0.0,
            "exit_code": st.exit_code, "version": st.version, "package": st.package,
            "backend": st.backend, "message": st.message}


class HttpShim:
    def __init__(self, control: ManagerControl, listen: ListenAddress, *,
                 token: bytes | Token | None = None, max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.control = control
        self.listen = listen
        self.token = as_token(token)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every connection, rejected ones too
        self._served: set[asyncio.Task[None]] = set()  # connections that count to the limit
        self._busy: set[asyncio.Task[None]] = set()  # connections processing a request
        self._closing = False
        self._stopped = asyncio.Event()
        # (method, path pattern, allowed query parameters, handler); first match wins.
        seed = ("service",)
        self._routes: list[tuple[str, re.Pattern[str], tuple[str, ...], Handler]] = [
            ("GET", re.compile("/status"), seed, self._status),
            ("POST", re.compile("/start"), seed, self._start),
            ("POST", re.compile("/stop"), (*seed, "timeout", "force"), self._stop),
            ("POST", re.compile("/restart"), seed, self._restart),
            ("POST", re.compile("/update"), seed, self._update),
            ("GET", re.compile("/version"), seed, self._version),
            ("GET", re.compile("/logs"), (*seed, "lines"), self._logs),
            ("GET", re.compile("/api/services"), ("page", "page_size", "pattern"), self._list),
            ("GET", re.compile("/api/services/([^/]+)/status"), (), self._api_status),
            ("POST", re.compile("/api/services/([^/]+)/start"), (), self._api_start),
            ("POST", re.compile("/api/services/([^/]+)/stop"), ("timeout", "force"),
             self._api_stop),
            ("POST", re.compile("/api/services/([^/]+)/restart"), (), self._api_restart),
            ("GET", re.compile("/api/services/([^/]+)/logs"), ("lines",), self._api_logs),
        ]

    # -- lifecycle ------------------------------------------------------------------------

    async def bind(self) -> tuple[str, int]:
        """Bind (port 0 = any free port) without serving yet; return the bound address."""
        if self._server is None:
            try:
                self._server = await asyncio.start_server(
                    self._accept, self.listen.host, self.listen.port, start_serving=False)
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
        """Stop accepting, let requests in progress finish within grace, close the rest."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
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
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            if rejected:
                await self._send(conn, writer, 503, _error("too many connections, retry later"),
                                 [("Retry-After", "1")], close=True)
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
                    got = HttpError(431, f"request head larger than {MAX_HEAD} bytes")
            except HttpError as exc:  # 413 or 431, before the body was read
                got = exc
            if isinstance(got, HttpError):  # answer, then close: the stream is unusable
                await self._send(conn, writer, got.status, _error(str(got)), got.headers,
                                 close=True)
                await _linger(reader, writer)
                return
            if got is None:
                return
            event, body = got
            if task is not None:
                self._busy.add(task)
            try:
                status, payload, headers = await self._handle(event, body)
                await self._send(conn, writer, status, payload, headers, close=self._closing,
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
        if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) > MAX_HEAD:
            raise HttpError(431, f"request head larger than {MAX_HEAD} bytes")
        length = dict(event.headers).get(b"content-length")
        if length is not None and int(length) > MAX_BODY:
            raise HttpError(413, f"request body larger than {MAX_BODY} bytes")
        if conn.they_are_waiting_for_100_continue:
            await _write(writer, conn.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[])))
        body = bytearray()
        while isinstance(part := await _next_event(conn, reader), h11.Data):
            body += part.data
            if len(body) > MAX_BODY:
                raise HttpError(413, f"request body larger than {MAX_BODY} bytes")
        return event, bytes(body)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int,
                    payload: JSON, headers: Headers, *, close: bool, head: bool = False,
                    ) -> None:
        body = json.dumps(payload).encode()
        fields = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                  *headers]
        if close:
            fields.append(("Connection", "close"))
        data = conn.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        if not head:  # an answer to HEAD has the headers only
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await _write(writer, data)

    # -- one request ----------------------------------------------------------------------

    async def _handle(self, event: h11.Request, body: bytes) -> tuple[int, JSON, Headers]:
        """Validate and route one request; every failure becomes a JSON error answer."""
        started = time.monotonic()
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        status, headers = 200, []
        with structlog.contextvars.bound_contextvars(method=method, path=path[:200]):
            try:
                payload = await self._route(method, path, query, event, body)
            except HttpError as exc:
                status, payload, headers = exc.status, _error(str(exc)), exc.headers
            except BackendAIError as exc:
                status, payload = exc.http_status, _error(str(exc))
                status = status if 400 <= status <= 599 else 500
            except Exception:
                log.exception("http.internal_error")
                status, payload = 500, _error("internal error")
            log.debug("http.request", status=status,
                      duration_ms=round((time.monotonic() - started) * 1000, 3))
        return status, payload, headers

    async def _route(self, method: str, path: str, query: str, event: h11.Request,
                     body: bytes) -> JSON:
        headers: dict[bytes, bytes] = {}
        for field, raw in event.headers:
            headers.setdefault(field, raw)
        if self.token is not None and not bearer_ok(headers.get(b"authorization"),
                                                    self.token.value):
            raise HttpError(401, "missing or invalid bearer token",
                            [("WWW-Authenticate", "Bearer")])
        matches = [(m, route) for route in self._routes if (m := route[1].fullmatch(path))]
        if not matches:
            raise NotFound(f"no endpoint {path[:200]!r}")
        chosen = [(m, route) for m, route in matches if route[0] == method]
        if not chosen:
            allow = ", ".join(sorted({route[0] for _, route in matches}))
            raise HttpError(405, f"method {method} not allowed here (allowed: {allow})",
                            [("Allow", allow)])
        match, (_, _, allowed, handler) = chosen[0]
        try:
            name = unquote(match.group(1), errors="strict") if match.groups() else ""
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True,
                              errors="strict", max_num_fields=32) if query else []
        except ValueError:
            raise InvalidArgument("malformed path or query string") from None
        params: dict[str, str] = {}
        for key, value in pairs:
            if key not in allowed:
                raise InvalidArgument(f"unknown query parameter {key[:40]!r}"
                                      f" (allowed: {', '.join(allowed) or 'none'})")
            if key in params:
                raise InvalidArgument(f"query parameter {key[:40]!r} given more than once")
            params[key] = value
        return await handler(Request(params, headers, body, name))

    # -- the seeds' endpoints -------------------------------------------------------------

    async def _status(self, req: Request) -> JSON:
        st = self.control.status(req.service())
        return {"running": st.running, "managerVersion": self.control.manager_version,
                "workingDirectory": self.control.working_directory,
                "service": st.name, "state": st.state.value, "pid": st.pid or None}

    async def _start(self, req: Request) -> JSON:
        await self.control.start(req.service())
        return {"success": True}

    async def _stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, MAX_STOP_TIMEOUT)
        await self.control.stop(req.service(), timeout=timeout, force=_flag(req, "force"))
        return {"success": True}

    async def _restart(self, req: Request) -> JSON:
        await self.control.restart(req.service())
        return {"success": True}

    async def _update(self, req: Request) -> JSON:
        data = _json_object(req, ("version", "service"))
        version, service = data.get("version"), data.get("service", req.service())
        if not isinstance(version, str):
            raise InvalidArgument("version must be a string, e.g. {\"version\": \"2.1.44\"}")
        if not isinstance(service, str):
            raise InvalidArgument("service must be a string")
        if "service" in data and "service" in req.query and service != req.query["service"]:
            raise InvalidArgument("service differs between the query and the body")
        started = await self.control.update(service, version)
        hub = "Hub update" if self.control.role == "hub" else "Update"
        message = (f"{hub} to version {started.version} started" if started.operation_id
                   else f"Already on version {started.version}")
        return {"success": True, "message": message, "operationId": started.operation_id}

    async def _version(self, req: Request) -> JSON:
        info = self.control.version(req.service())
        return {"version": info.version, "name": info.name, "service": info.service}

    async def _logs(self, req: Request) -> JSON:
        lines = _int(req, "lines", DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
        name = self.control.unit(req.service()).name
        text = "\n".join(await self.control.logs(name, lines))
        return {"service": name, "lines": lines, "logs": text}

    # -- seed 004: /api/services ----------------------------------------------------------

    async def _list(self, req: Request) -> JSON:
        page = _int(req, "page", 1, 1, 1_000_000)
        size = _int(req, "page_size", 50, 1, 500)
        found = self.control.list(req.query.get("pattern", ""))
        now = time.time()
        chunk = found[(page - 1) * size:page * size]
        return {"success": True, "services": [service_json(st, now) for st in chunk],
                "count": len(chunk), "meta": {"page": page, "page_size": size,
                                              "total": len(found),
                                              "pages": math.ceil(len(found) / size)}}

    async def _api_status(self, req: Request) -> JSON:
        return {"success": True, "service": service_json(self.control.status(req.name),
                                                         time.time())}

    async def _api_start(self, req: Request) -> JSON:
        st = await self.control.start(req.name)
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' started successfully"}

    async def _api_stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, 300)
        st = await self.control.stop(req.name, timeout=timeout, force=_flag(req, "force"))
        return {"success": True, "message": f"Service '{st.name}' stopped"}

    async def _api_restart(self, req: Request) -> JSON:
        st = await self.control.restart(req.name)
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' restarted"}

    async def _api_logs(self, req: Request) -> JSON:
        lines = _int(req, "lines", DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
        name = self.control.unit(req.name).name
        text = "\n".join(await self.control.logs(name, lines))
        return {"success": True, "service": name, "lines": lines, "logs": text}


def _error(message: str) -> JSON:
    return {"success": False, "error": message}


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
