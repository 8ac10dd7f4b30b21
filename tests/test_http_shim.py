"""The HTTP shim over real sockets: the manager's routes on a real HttpServer on
127.0.0.1 port 0, the real ManagerControl and ManagerConfig, real clients (http.client
in a thread, the curl binary running the seeds' commands, raw sockets for protocol
abuse)."""

from __future__ import annotations

import asyncio
import http.client
import json
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from backendai.errors import InvalidArgument, ServiceFailed
from backendai.http_server import MAX_BODY, HttpServer
from backendai.listen import ListenAddress
from manager.api.control import ManagerControl
from manager.api.http_routes import manager_http_server
from manager.config import ServiceConfig, parse
from manager.supervision.states import ServiceStatus, State
from manager.updates.results import UpdateStarted
from tests.fixtures.http_calls import Reply, assert_error, http_call, raw_exchange

CURL = Path("/usr/bin/curl")
needs_curl = pytest.mark.skipif(
    not CURL.exists(), reason="/usr/bin/curl is not installed: the seeds' curl commands "
                              "cannot be replayed (the http.client tests still run)")
TOKEN = "s3cret-token"
PRIMARY = {"agent": ("ai-agent", "@backend-ai/agent"),
           "hub": ("ai-hub", "@proxmox-ai-control/hub")}


class MemoryUnit:
    """A ServiceUnit kept in memory that records every lifecycle call.

    It isolates the transport: these tests check what the shim puts on the wire and which
    control calls a request makes, with no process behind it. The end-to-end tests with
    real supervised processes live in tests/test_manager_e2e.py.
    """

    def __init__(self, config: ServiceConfig, state: State = State.RUNNING,
                 pid: int = 4242) -> None:
        self.config = config
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, Exception] = {}  # method name -> error it raises
        self.gate: asyncio.Event | None = None  # when set, start() waits for it
        self.entered = asyncio.Event()  # start() was called
        self.log_lines = [f"line {i}" for i in range(1, 301)]
        self._st = ServiceStatus(
            name=config.name, state=state, pid=pid if state.is_up else 0,
            started_at=time.time() - 5 if state.is_up else 0.0, version=config.version,
            package=config.package, exit_code=None if state.is_up else 1,
            message="" if state.is_up else "exited too quickly")

    @property
    def name(self) -> str:
        return self.config.name

    def _check(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def status(self) -> ServiceStatus:
        self._check("status")
        return self._st

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        self._check("start")
        self.calls.append(("start", wait))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self._st = replace(self._st, state=State.RUNNING, pid=5000, started_at=time.time(),
                           exit_code=None, message="")
        return self._st

    async def stop(self, *, timeout: float | None = None,
                   force: bool = False) -> ServiceStatus:
        self.calls.append(("stop", timeout, force))
        self._st = replace(self._st, state=State.STOPPED, pid=0, started_at=0.0, exit_code=0)
        return self._st

    async def restart(self) -> ServiceStatus:
        self.calls.append(("restart",))
        self._st = replace(self._st, state=State.RUNNING, pid=self._st.pid + 1,
                           restarts=self._st.restarts + 1, started_at=time.time())
        return self._st

    async def tail(self, lines: int) -> list[str]:
        return self.log_lines[-lines:]

    async def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        yield self.log_lines[-tail:] if tail else []

    async def watch(self) -> AsyncIterator[ServiceStatus]:
        yield self._st

    async def run(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class FakeUpdater:
    """Records accepted updates; rejects a bad version as the real updater would."""

    def __init__(self, current: str) -> None:
        self.current = current
        self.calls: list[tuple[Any, ...]] = []
        self.lifecycle: list[tuple[str, str, bool]] = []  # before_lifecycle calls

    async def update(self, service: str, version: str, *, origin: str = "",
                     start_stopped: bool = False) -> UpdateStarted:
        if not version or "/" in version:
            raise InvalidArgument(f"invalid version {version!r}")
        self.calls.append((service, version) if not (origin or start_stopped)
                          else (service, version, origin, start_stopped))
        if version == self.current:
            return UpdateStarted(operation_id="", version=version, message="already there")
        return UpdateStarted(operation_id="op-1", version=version, message="started")

    async def before_lifecycle(self, service: str, request: str, *, force: bool) -> None:
        self.lifecycle.append((service, request, force))


@dataclass
class Env:
    shim: HttpServer
    control: ManagerControl
    units: dict[str, MemoryUnit]
    updater: FakeUpdater | None
    port: int
    token: str | None = None
    primary: str = "ai-agent"
    extra: dict[str, Any] = field(default_factory=dict)

    def touched(self) -> list[tuple[Any, ...]]:
        """Every lifecycle or update call the shim made."""
        calls = [(name, *c) for name, u in self.units.items() for c in u.calls]
        return calls + [("update", *c) for c in (self.updater.calls if self.updater else [])]

    async def call(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None, *, auth: bool = True) -> Reply:
        hdrs = dict(headers or {})
        if self.token and auth:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        return await asyncio.to_thread(http_call, self.port, method, path, body, hdrs)

    async def curl(self, command: str) -> tuple[int, bytes]:
        """Run a seed's curl command line against this shim; (status, body)."""
        command = command.replace("\\\n", " ")  # shell line continuations
        args = shlex.split(command.replace("http://localhost:3081",
                                           f"http://127.0.0.1:{self.port}"))
        assert args[0] == "curl"
        proc = await asyncio.create_subprocess_exec(
            str(CURL), *args[1:], "--silent", "--show-error", "--max-time", "10",
            "--write-out", "\n%{http_code}", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        body, _, code = out.rpartition(b"\n")
        return int(code), body


def parse_raw(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    shims: list[HttpServer] = []

    async def make(*, role: str = "agent", token: str | None = None, updater: bool = True,
                   **shim_options: Any) -> Env:
        primary, package = PRIMARY[role]
        config = parse({
            "role": role, "state_dir": str(tmp_path), "http_listen": "127.0.0.1:0",
            "grpc_listen": "127.0.0.1:0",
            "services": [
                {"name": primary, "command": ["/bin/true"], "package": package,
                 "version": "2.1.43"},
                {"name": "worker", "command": ["/bin/true"], "version": "1.0.0"},
                {"name": "job@1", "command": ["/bin/true"], "version": "0.3.0"},
            ]})
        units = {s.name: MemoryUnit(s) for s in config.services}
        units["job@1"] = MemoryUnit(config.services[2], state=State.FATAL)
        fake = FakeUpdater("2.1.43") if updater else None
        control = ManagerControl(config, units, updater=fake)
        shim = manager_http_server(control, ListenAddress("127.0.0.1", 0),
                                   token=token.encode() if token else None, **shim_options)
        host, port = await shim.start()
        shims.append(shim)
        assert host == "127.0.0.1"
        assert port > 0
        return Env(shim, control, units, fake, port, token, primary)

    yield make
    for shim in shims:
        await shim.stop(grace=1.0)


@pytest.fixture
async def env(make_env: Callable[..., Awaitable[Env]]) -> Env:
    return await make_env()


# -- the seeds' commands, byte for byte --------------------------------------------------

@needs_curl
async def test_seed_status_and_version_bytes(env: Env) -> None:
    code, body = await env.curl("curl http://localhost:3081/status")
    assert code == 200
    assert body == (b'{"running": true, "managerVersion": "0.1.0", "workingDirectory": '
                    + json.dumps(env.control.working_directory).encode()
                    + b', "service": "ai-agent", "state": "RUNNING", "pid": 4242, '
                    # beyond the seeds (extra keys are allowed): the update summary
                    b'"update": {"runningOperationId": "", "runningVersion": "", '
                    b'"runningStep": "", "runningOrigin": "", "lastOperationId": "", '
                    b'"lastOutcome": "", "lastMessage": "", "lastVersion": "", '
                    b'"lastOrigin": ""}}')
    assert env.control.manager_version == "0.1.0"
    code, body = await env.curl("curl http://localhost:3081/version")
    assert (code, body) == (
        200, b'{"version": "2.1.43", "name": "@backend-ai/agent", "service": "ai-agent"}')
    assert env.touched() == []


@needs_curl
@pytest.mark.parametrize("action", ["start", "stop", "restart"])
async def test_seed_lifecycle_commands(env: Env, action: str) -> None:
    code, body = await env.curl(f"curl -X POST http://localhost:3081/{action}")
    assert (code, body) == (200, b'{"success": true}')
    expected = {"start": ("start", True), "stop": ("stop", None, False),
                "restart": ("restart",)}[action]
    assert env.touched() == [("ai-agent", *expected)]


@needs_curl
@pytest.mark.parametrize(("role", "command", "message"), [
    ("agent", """curl -X POST http://localhost:3081/update \\
                   -H "Content-Type: application/json" \\
                   -d '{"version": "2.1.44"}'""", "Update to version 2.1.44 started"),
    ("hub", """curl -X POST http://localhost:3081/update \\
                 -H "Content-Type: application/json" \\
                 -d '{"version": "2.0.11"}'""", "Hub update to version 2.0.11 started"),
])
async def test_seed_update_message_per_role(make_env: Any, role: str, command: str,
                                            message: str) -> None:
    env = await make_env(role=role)
    code, body = await env.curl(command)
    assert code == 200
    assert body == (b'{"success": true, "message": "' + message.encode()
                    + b'", "operationId": "op-1", "started": true}')
    version = message.split()[-2]
    assert env.touched() == [("update", PRIMARY[role][0], version)]


@needs_curl
@pytest.mark.parametrize(("role", "command", "lines"), [
    ("agent", "curl http://localhost:3081/logs?lines=100", 100),
    ("hub", "curl http://localhost:3081/logs?lines=50", 50),
    ("hub", "curl http://localhost:3081/logs", 100),
])
async def test_seed_logs(make_env: Any, role: str, command: str, lines: int) -> None:
    env = await make_env(role=role)
    code, body = await env.curl(command)
    logs = "\n".join(f"line {i}" for i in range(301 - lines, 301))
    assert code == 200
    assert body == json.dumps({"service": env.primary, "lines": lines, "logs": logs}).encode()


@needs_curl
async def test_curl_with_token_and_oversized_body(make_env: Any, tmp_path: Path) -> None:
    env = await make_env(token=TOKEN)
    code, body = await env.curl("curl http://localhost:3081/status")
    assert code == 401
    assert json.loads(body)["error"] == "missing or invalid bearer token"
    code, body = await env.curl(
        f'curl -H "Authorization: Bearer {TOKEN}" http://localhost:3081/status')
    assert code == 200
    assert json.loads(body)["running"] is True
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"version": "1" * (MAX_BODY + 10)}))
    code, body = await env.curl(
        f'curl -X POST -H "Authorization: Bearer {TOKEN}" -H "Content-Type: application/json"'
        f' --data-binary @{big} http://localhost:3081/update')
    assert code == 413
    assert json.loads(body)["success"] is False
    assert env.touched() == []


# -- the seeds' endpoints over http.client ---------------------------------------------

async def test_status_of_another_service_and_stop_parameters(env: Env) -> None:
    reply = await env.call("GET", "/status?service=job%401")
    data = reply.json()
    assert reply.status == 200
    assert data["running"] is False
    assert (data["service"], data["state"], data["pid"]) == ("job@1", "FATAL", None)
    reply = await env.call("POST", "/stop?service=worker&timeout=2.5&force=true")
    assert (reply.status, reply.body) == (200, b'{"success": true}')
    assert env.touched() == [("worker", "stop", 2.5, True)]


async def test_update_edge_cases(make_env: Any) -> None:
    env = await make_env()
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    reply = await env.call("POST", "/update", b'{"version": "2.1.43"}', json_type)
    assert reply.json() == {"success": True, "message": "Already on version 2.1.43",
                            "operationId": "", "started": False}
    reply = await env.call("POST", "/update", b'{"version": "1.2.0", "service": "worker"}',
                           json_type)
    assert reply.status == 200
    assert reply.json()["message"] == "Update to version 1.2.0 started"
    assert env.updater is not None
    assert env.updater.calls == [("ai-agent", "2.1.43"), ("worker", "1.2.0")]
    reply = await env.call("POST", "/update", b'{"version": "../x"}', json_type)
    assert_error(reply, 400, "version may only hold")
    assert "'../x'" in reply.json()["error"]
    assert env.updater.calls == [("ai-agent", "2.1.43"), ("worker", "1.2.0")]  # never reached
    # No updater configured: NotConfigured is a 501, not a 200; a bad version is still 400.
    bare = await make_env(updater=False)
    reply = await bare.call("POST", "/update", b'{"version": "2.1.44"}', json_type)
    assert_error(reply, 501, "updates are not configured")
    reply = await bare.call("POST", "/update", b'{"version": "../../x"}', json_type)
    assert_error(reply, 400, "version may only hold")
    assert bare.touched() == []


# -- seed 004: /api/services -----------------------------------------------------------

async def test_list_services_with_pages_and_pattern(env: Env) -> None:
    data = (await env.call("GET", "/api/services")).json()
    # seed 004's keys, then seed 003's counts by state (issue 15)
    assert list(data) == ["success", "services", "count", "meta", "counts"]
    assert [s["name"] for s in data["services"]] == ["ai-agent", "worker", "job@1"]
    assert data["count"] == 3
    assert data["meta"] == {"page": 1, "page_size": 50, "total": 3, "pages": 1}
    assert data["counts"] == {"RUNNING": 2, "FATAL": 1}
    first, _, fatal = data["services"]
    assert list(first) == ["name", "status", "state", "pid", "restarts", "uptime_seconds",
                           "exit_code", "version", "package", "backend", "message",
                           "health", "health_message"]
    assert (first["health"], first["health_message"]) == ("unknown", "")
    assert (first["status"], first["state"], first["pid"]) == ("running", "RUNNING", 4242)
    assert 4 < first["uptime_seconds"] < 60
    assert first["exit_code"] is None
    assert (first["package"], first["version"]) == ("@backend-ai/agent", "2.1.43")
    assert (fatal["status"], fatal["state"], fatal["pid"], fatal["exit_code"]) == (
        "failed", "FATAL", None, 1)
    assert fatal["uptime_seconds"] == 0.0
    data = (await env.call("GET", "/api/services?page=2&page_size=2")).json()
    assert [s["name"] for s in data["services"]] == ["job@1"]
    assert data["count"] == 1
    assert data["meta"] == {"page": 2, "page_size": 2, "total": 3, "pages": 2}
    data = (await env.call("GET", "/api/services?pattern=w*")).json()
    assert [s["name"] for s in data["services"]] == ["worker"]
    assert data["counts"] == {"RUNNING": 1}
    data = (await env.call("GET", "/api/services?page=9")).json()
    assert data["services"] == []
    assert data["count"] == 0


async def test_per_service_lifecycle_routes(env: Env) -> None:
    reply = await env.call("GET", "/api/services/job%401/status")
    assert reply.status == 200
    assert reply.json()["service"]["name"] == "job@1"
    reply = await env.call("POST", "/api/services/job%401/start")
    assert reply.json() == {"success": True, "pid": 5000,
                            "message": "Service 'job@1' started successfully"}
    reply = await env.call("POST", "/api/services/worker/stop?timeout=5&force=false")
    assert reply.json() == {"success": True, "message": "Service 'worker' stopped"}
    reply = await env.call("POST", "/api/services/ai-agent/restart")
    assert reply.json() == {"success": True, "pid": 4243,
                            "message": "Service 'ai-agent' restarted"}
    assert env.touched() == [("ai-agent", "restart"), ("worker", "stop", 5.0, False),
                             ("job@1", "start", True)]
    reply = await env.call("GET", "/api/services/worker/logs?lines=3")
    assert reply.json() == {"success": True, "service": "worker", "lines": 3,
                            "logs": "line 298\nline 299\nline 300"}


# -- bad input: a clear JSON error, a fitting status, nothing changed ------------------

JSON_TYPE = {"Content-Type": "application/json"}


# (method, path, body, headers, status, text the error must contain)
BAD_REQUESTS: list[tuple[str, str, bytes | None, dict[str, str], int, str]] = [
    ("GET", "/api/services/nope/status", None, {}, 404, "no service named 'nope'"),
    ("POST", "/api/services/nope/start", None, {}, 404, "nope"),
    ("POST", "/start?service=nope", None, {}, 404, "nope"),
    ("POST", "/stop?service=../../etc", None, {}, 400, "service name"),
    ("POST", "/api/services/a%2Fb/stop", None, {}, 400, "service name"),
    ("POST", "/api/services/%ff/restart", None, {}, 400, "malformed"),
    ("POST", "/update", b'{"version": ', JSON_TYPE, 400, "not valid JSON"),
    ("POST", "/update", b"[" * 50_000, JSON_TYPE, 400, "not valid JSON"),
    ("POST", "/update", b'["2.1.44"]', JSON_TYPE, 400, "JSON object"),
    ("POST", "/update", b'{"version": 2}', JSON_TYPE, 400, "version must be a string"),
    ("POST", "/update", b"{}", JSON_TYPE, 400, "version must be a string"),
    ("POST", "/update", b'{"version": "1", "force": true}', JSON_TYPE, 400, "'force'"),
    ("POST", "/update", b'{"version": "1", "service": "nope"}', JSON_TYPE, 404, "nope"),
    ("POST", "/update?service=worker", b'{"version": "1", "service": "ai-agent"}', JSON_TYPE,
     400, "differs"),
    ("POST", "/update", b'{"version": "2.1.44"}', {"Content-Type": "text/plain"}, 415,
     "application/json"),
    ("POST", "/update", b'{"version": "2.1.44"}', {}, 415, "application/json"),
    ("GET", "/logs?lines=abc", None, {}, 400, "lines"),
    ("GET", "/logs?lines=-1", None, {}, 400, "lines"),
    ("GET", "/logs?lines=0", None, {}, 400, "lines"),
    ("GET", "/logs?lines=1000000000000", None, {}, 400, "lines"),
    ("GET", "/logs?lines=", None, {}, 400, "lines"),
    ("GET", "/logs?lines=1&lines=2", None, {}, 400, "more than once"),
    ("GET", "/api/services/worker/logs?lines=100001", None, {}, 400, "lines"),
    ("POST", "/stop?timeout=x", None, {}, 400, "timeout"),
    ("POST", "/stop?timeout=nan", None, {}, 400, "timeout"),
    ("POST", "/stop?force=maybe", None, {}, 400, "force"),
    ("POST", "/api/services/worker/stop?timeout=301", None, {}, 400, "timeout"),
    ("POST", "/api/services/worker/stop?timeout=abc", None, {}, 400, "timeout"),
    ("POST", "/api/services/worker/stop?force=maybe", None, {}, 400, "force"),
    ("GET", "/api/services?page=0", None, {}, 400, "page"),
    ("GET", "/api/services?page_size=501", None, {}, 400, "page_size"),
    ("GET", "/api/services?pattern=" + "*" * 300, None, {}, 400, "pattern"),
    ("GET", "/status?verbose=1", None, {}, 400, "'verbose'"),
    ("POST", "/start?service", None, {}, 400, "malformed"),
    ("GET", "/nope", None, {}, 404, "/nope"),
    ("GET", "/", None, {}, 404, "no endpoint"),
    ("GET", "/status/", None, {}, 404, "no endpoint"),
    ("GET", "/api/services//status", None, {}, 404, "no endpoint"),
    ("GET", "/api/services/worker/nope", None, {}, 404, "no endpoint"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda c: f"{c[0]} {c[1][:60]} {c[4]}")
async def test_bad_requests_get_clear_errors_and_change_nothing(
        env: Env, case: tuple[str, str, bytes | None, dict[str, str], int, str]) -> None:
    method, path, body, headers, status, needle = case
    assert_error(await env.call(method, path, body, headers), status, needle)
    assert env.touched() == []


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/status", "GET"),
    ("DELETE", "/status", "GET"),
    ("GET", "/start", "POST"),
    ("PUT", "/update", "GET, POST"),
    ("PUT", "/api/services/worker/stop", "POST"),
    ("POST", "/api/services/worker/logs", "GET"),
    ("POST", "/api/services", "GET"),
])
async def test_wrong_method_is_405_with_allow(env: Env, method: str, path: str,
                                              allow: str) -> None:
    reply = await env.call(method, path)
    assert_error(reply, 405, method)
    assert reply.headers["Allow"] == allow
    assert env.touched() == []


async def test_head_gets_headers_only(env: Env) -> None:
    reply = await env.call("HEAD", "/status")
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET"
    assert reply.body == b""


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN}x", "Bearer"])
async def test_token_is_required_when_configured(make_env: Any,
                                                 authorization: str | None) -> None:
    env = await make_env(token=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [("POST", "/stop"), ("GET", "/status"), ("GET", "/nope"),
                         ("POST", "/api/services/worker/restart")]:
        reply = await env.call(method, path, None, headers, auth=False)
        assert_error(reply, 401, "missing or invalid bearer token")
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert env.touched() == []
    reply = await env.call("POST", "/stop")
    assert (reply.status, reply.body) == (200, b'{"success": true}')


async def test_oversized_bodies_are_413(env: Env) -> None:
    big = b'{"version": "' + b"1" * MAX_BODY + b'"}'
    assert_error(await env.call("POST", "/update", big, JSON_TYPE), 413, str(MAX_BODY))
    # An iterable body goes chunked, without a Content-Length: the limit applies as the
    # body arrives.
    chunks = iter([b"x" * 16384] * 8)
    reply = await asyncio.to_thread(http_call, env.port, "POST", "/update", chunks, JSON_TYPE)
    assert_error(reply, 413)
    assert env.touched() == []


async def test_service_errors_keep_their_status_and_unexpected_ones_say_internal(
        env: Env) -> None:
    env.units["worker"].fail["start"] = ServiceFailed("worker exited with code 3 at start")
    reply = await env.call("POST", "/start?service=worker")
    assert_error(reply, 500, "worker exited with code 3 at start")
    env.units["ai-agent"].fail["status"] = RuntimeError("secret detail")
    with capture_logs() as logs:
        reply = await env.call("GET", "/status")
    data = assert_error(reply, 500)
    assert data["error"] == "internal error"
    assert b"secret" not in reply.body
    failures = [e for e in logs if e["event"] == "http.internal_error"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True
    assert env.touched() == []


async def test_each_request_logs_one_event(env: Env) -> None:
    with capture_logs() as logs:
        await env.call("GET", "/version")
        await env.call("GET", "/nope")
    events = [e for e in logs if e["event"] == "http.request"]
    assert [(e["status"], e["log_level"]) for e in events] == [(200, "debug"), (404, "debug")]
    assert all(e["duration_ms"] >= 0 for e in events)


# -- the connection: protocol errors, keep-alive, slow clients, limits, stop -----------

async def test_garbage_bytes_get_400_and_the_server_keeps_serving(env: Env) -> None:
    raw = await raw_exchange(env.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    status, headers, data = parse_raw(raw)
    assert status == 400
    assert headers["connection"] == "close"
    assert data == {"success": False, "error": "malformed HTTP request"}
    raw = await raw_exchange(env.port, b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: "
                             + b"a" * 20_000 + b"\r\n\r\n")
    status, _, data = parse_raw(raw)
    assert status == 431
    assert data["success"] is False
    assert "16384" in data["error"]
    reply = await env.call("GET", "/status")
    assert reply.status == 200
    assert reply.json()["running"] is True
    assert env.touched() == []


async def test_many_requests_on_one_keep_alive_connection(env: Env) -> None:
    def run() -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
        statuses = []
        try:
            conn.connect()
            sock = conn.sock
            for i in range(60):
                method, path, body = [("GET", "/status", None), ("GET", "/nope", None),
                                      ("POST", "/update", b"{bad"),
                                      ("GET", "/logs?lines=abc", None)][i % 4]
                conn.request(method, path, body=body, headers=JSON_TYPE)
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
                assert conn.sock is sock, "the server closed the keep-alive connection"
        finally:
            conn.close()
        return statuses

    statuses = await asyncio.to_thread(run)
    assert statuses == [200, 404, 400, 400] * 15
    assert env.touched() == []


async def test_silent_and_slow_clients_do_not_block_others(make_env: Any) -> None:
    env = await make_env(request_timeout=0.5)
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", env.port)
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", env.port)
    try:
        slow_w.write(b"POST /start HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        for _ in range(5):
            assert (await env.call("GET", "/status")).status == 200
        async with asyncio.timeout(10):
            assert await silent_r.read() == b"", "an idle client is dropped without a reply"
            status, headers, data = parse_raw(await slow_r.read())
        assert status == 408
        assert headers["connection"] == "close"
        assert data == {"success": False, "error": "request not received in time"}
    finally:
        for w in (silent_w, slow_w):
            w.close()
            await w.wait_closed()
    assert env.touched() == []


async def test_connections_over_the_limit_get_503(make_env: Any) -> None:
    env = await make_env(max_connections=2)
    held = [http.client.HTTPConnection("127.0.0.1", env.port, timeout=10) for _ in range(2)]

    def get(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/version")
        resp = conn.getresponse()
        resp.read()
        return resp.status

    try:
        for conn in held:  # both are accepted and stay open (keep-alive)
            assert await asyncio.to_thread(get, conn) == 200
        reply = await env.call("GET", "/version")
        assert_error(reply, 503, "too many connections")
        assert reply.headers["Connection"] == "close"
        assert await asyncio.to_thread(get, held[0]) == 200, "held ones still work"
    finally:
        for conn in held:
            conn.close()


async def test_stop_finishes_requests_in_flight_and_closes_idle_ones(env: Env) -> None:
    unit = env.units["ai-agent"]
    unit.gate = asyncio.Event()
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", env.port)
    try:
        in_flight = asyncio.create_task(env.call("POST", "/start"))
        await asyncio.wait_for(unit.entered.wait(), 10)
        stopping = asyncio.create_task(env.shim.stop(grace=10))
        await asyncio.sleep(0)  # a yield, not a wait: stop() runs up to its first await
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", env.port)
        assert await asyncio.wait_for(idle_r.read(), 10) == b""
        assert not stopping.done()
        unit.gate.set()
        reply = await asyncio.wait_for(in_flight, 10)
        assert (reply.status, reply.body) == (200, b'{"success": true}')
        assert reply.headers["Connection"] == "close"
        await asyncio.wait_for(stopping, 10)
        await asyncio.wait_for(env.shim.stop(), 1)  # idempotent
    finally:
        idle_w.close()
        await idle_w.wait_closed()


async def test_stop_cuts_off_requests_after_grace(env: Env) -> None:
    unit = env.units["ai-agent"]
    unit.gate = asyncio.Event()  # never set: the start never finishes
    in_flight = asyncio.create_task(env.call("POST", "/start"))
    await asyncio.wait_for(unit.entered.wait(), 10)
    started = time.monotonic()
    await asyncio.wait_for(env.shim.stop(grace=0.2), 5)
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(in_flight, 10)


async def test_force_reaches_the_update_check_of_every_lifecycle_route(env: Env) -> None:
    """Every start, stop and restart asks the updater first, with the force flag as
    given (the refusal and the cancel are the updater's: tests/test_update_lifecycle.py)."""
    assert env.updater is not None
    for path in ("/start?force=true", "/stop?force=1", "/restart",
                 "/api/services/worker/start?force=true", "/api/services/worker/stop",
                 "/api/services/worker/restart?force=0"):
        assert (await env.call("POST", path)).status == 200, path
    assert env.updater.lifecycle == [
        ("ai-agent", "start", True), ("ai-agent", "stop", True), ("ai-agent", "restart", False),
        ("worker", "start", True), ("worker", "stop", False), ("worker", "restart", False)]


async def test_update_reports_need_an_updater(make_env: Any) -> None:
    bare = await make_env(updater=False)
    assert_error(await bare.call("GET", "/update"), 501, "updates are not configured")
    assert_error(await bare.call("GET", "/update/" + "0" * 32), 501, "not configured")
    assert_error(await bare.call("GET", "/update/x"), 400, "operation_id")
    assert bare.touched() == []
