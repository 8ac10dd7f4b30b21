"""The manager's dashboard API against a real `ai-manager` with real services, through a
plain WebSocket client (`websockets`) and raw sockets: the shapes docs/DASHBOARD.md
documents, auth (no or a wrong token is closed with 1008 before any data; a read-only
token watches but cannot act), a reader that never reads (bounded memory, other clients
unaffected, the latest value per service), bad frames and floods, the log tail, unknown
paths, and the static page's headers and root (no path leaves it)."""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from backendai.auth import write_token
from backendai.v1 import manager_pb2 as mpb
from tests.conftest import ManagerProc, assert_eventually, fast_service

ADMIN, VIEWER = "dash-admin-token", "dash-viewer-token"

SERVICE_KEYS = {"name", "state", "desired", "pid", "restarts", "started_at", "uptime_seconds",
                "state_since", "exit_code", "exit_signal", "version", "package", "backend",
                "message", "adopted", "health", "health_message", "health_since",
                "health_failures", "instance_of", "instance", "after", "update"}
UPDATE_KEYS = {"running_operation_id", "running_version", "running_step", "running_origin",
               "last_operation_id", "last_outcome", "last_message", "last_version",
               "last_origin"}


def ws(m: ManagerProc, path: str, **kw: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{m.http_port}{path}", proxy=None, open_timeout=10, **kw)


def recv_json(conn: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(conn.recv(timeout=timeout))


def until(conn: ClientConnection, predicate: Any, timeout: float = 10) -> dict[str, Any]:
    """Messages until one matches (on the monotonic clock)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching message in time")
        msg = recv_json(conn, left)
        if predicate(msg):
            return msg


def is_state(name: str, state: str) -> Any:
    return lambda msg: msg.get("type") == "status" and msg["service"]["name"] == name \
        and msg["service"]["state"] == state


def closed_with(conn: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as got:
        conn.recv(timeout=10)
    assert got.value.rcvd is not None, "closed without a close frame"
    return got.value.rcvd.code, got.value.rcvd.reason


def tokened(make_manager, tmp_path, services: list[dict[str, Any]]) -> ManagerProc:
    write_token(tmp_path / "admin.token", ADMIN)
    write_token(tmp_path / "viewer.token", VIEWER)
    m = make_manager(services, top={
        "auth_token_file": str(tmp_path / "admin.token"),
        "auth_tokens": [{"name": "viewer", "file": str(tmp_path / "viewer.token"),
                         "role": "read"}]})
    m.token = ADMIN
    return m.start()


@pytest.fixture
def manager(make_manager) -> ManagerProc:
    return make_manager([fast_service("web", "--interval", "0.1"),
                         fast_service("worker", "--interval", "1")]).start()


# ---- shapes ------------------------------------------------------------------------------

def test_snapshot_then_one_message_per_change(manager) -> None:
    m = manager
    with ws(m, "/api/services/ws") as conn:
        snap = recv_json(conn)
        assert snap["type"] == "snapshot"
        assert set(snap) == {"type", "manager", "caller", "at", "services"}
        assert snap["caller"] == {"name": "anonymous", "role": "admin"}
        assert set(snap["manager"]) == {"version", "role", "host", "primary"}
        assert snap["manager"]["primary"] == "web" and snap["manager"]["role"] == "agent"
        assert [s["name"] for s in snap["services"]] == ["web", "worker"]
        for s in snap["services"]:
            assert set(s) == SERVICE_KEYS and set(s["update"]) == UPDATE_KEYS
            assert s["state"] in ("STARTING", "RUNNING") and s["pid"] > 0
            assert s["uptime_seconds"] >= 0 and s["started_at"] > 0
            assert s["health"] is None  # no check configured
        old_pid = snap["services"][1]["pid"]
        if snap["services"][1]["state"] != "RUNNING":
            until(conn, is_state("worker", "RUNNING"))
        assert m.http("POST", "/api/services/worker/stop")[0] == 200
        stopped = until(conn, is_state("worker", "STOPPED"))
        assert set(stopped) == {"type", "at", "service"}
        assert set(stopped["service"]) == SERVICE_KEYS
        assert stopped["service"]["pid"] is None
        assert m.http("POST", "/api/services/worker/start")[0] == 200
        running = until(conn, is_state("worker", "RUNNING"))
        assert running["service"]["pid"] not in (None, old_pid)
        # a kill -9 shows the restart live
        psutil.Process(running["service"]["pid"]).kill()
        again = until(conn, lambda msg: is_state("worker", "RUNNING")(msg)
                      and msg["service"]["restarts"] == 1)
        assert again["service"]["pid"] != running["service"]["pid"]


def test_services_a_reload_adds_and_removes_show_live(make_manager) -> None:
    """A config reload (POST /reload, then SIGHUP) while a client watches: an added
    service arrives as a `status` for a name not seen yet (then its changes), a removed
    one as `removed`; no reconnect needed, and a new client's snapshot agrees."""
    from tests.test_config_reload import rewrite

    web = fast_service("web", "--interval", "0.5")
    worker = fast_service("worker", "--interval", "0.5")
    m = make_manager([web, worker]).start()
    with ws(m, "/api/services/ws") as conn:
        snap = recv_json(conn)
        assert [s["name"] for s in snap["services"]] == ["web", "worker"]
        rewrite(m, [web, fast_service("extra", "--interval", "0.5")])
        code, body = m.http("POST", "/reload")
        assert code == 200, body
        assert json.loads(body)["message"] == \
            "reloaded: 1 added, 1 removed, 0 changed, 1 unchanged"
        seen: dict[str, list[dict[str, Any]]] = {}

        def done(msg: dict[str, Any]) -> bool:
            name = msg.get("service") if msg["type"] == "removed" else \
                msg.get("service", {}).get("name")
            seen.setdefault(str(name), []).append(msg)
            return any(x["type"] == "removed" for x in seen.get("worker", [])) and \
                any(x["type"] == "status" and x["service"]["state"] == "RUNNING"
                    for x in seen.get("extra", []))

        until(conn, done, 20)
        removed = [x for x in seen["worker"] if x["type"] == "removed"][-1]
        assert set(removed) == {"type", "at", "service"} and removed["service"] == "worker"
        assert all(set(x) == {"type", "at", "service"} and set(x["service"]) == SERVICE_KEYS
                   for x in seen["extra"])
        # the removed service says nothing more; the added one's changes keep coming
        assert m.http("POST", "/api/services/extra/stop")[0] == 200
        stopped = until(conn, lambda msg: msg["type"] != "status"
                        or msg["service"]["name"] != "web", 10)
        assert stopped["type"] == "status" and stopped["service"]["name"] == "extra"
        if stopped["service"]["state"] != "STOPPED":
            until(conn, is_state("extra", "STOPPED"))
        with ws(m, "/api/services/ws") as other:
            assert [s["name"] for s in recv_json(other)["services"]] == ["web", "extra"]
        # a SIGHUP brings the worker back: it arrives on the same socket
        rewrite(m, [web, worker, fast_service("extra", "--interval", "0.5")])
        m.proc.send_signal(signal.SIGHUP)
        back = until(conn, is_state("worker", "RUNNING"), 20)
        assert set(back["service"]) == SERVICE_KEYS


def test_log_tail_then_new_lines(manager) -> None:
    m = manager
    with ws(m, "/api/services/web/logs/ws?tail=5") as conn:
        first = recv_json(conn)
        assert first == {"type": "logs", "service": "web", "tail": True, "lines": []}
        tail = recv_json(conn)
        assert tail["type"] == "logs" and 1 <= len(tail["lines"]) <= 5
        seen = list(tail["lines"])
        # the service prints a tick every 0.1 s: new lines arrive, batched
        while len(seen) < 15:
            msg = recv_json(conn)
            assert set(msg) == {"type", "service", "lines"}
            seen += msg["lines"]
        ticks = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # none lost, in order


EVENT_KEYS = {"id", "at", "kind", "subject", "message", "fields", "actor", "transport",
              "peer", "result"}


def test_events_socket_recent_then_live_with_who_did_it(make_manager, tmp_path) -> None:
    """WS /api/events/ws: the newest `limit` events of a subject first (oldest first in
    the message, with the id they reach), then each new one as it is committed: a kill
    -9's state change and restart, an operator's stop with its audit record (token name,
    transport, peer, result); nothing of another subject; a viewer may watch."""
    m = tokened(make_manager, tmp_path, [fast_service("web", "--interval", "0.5"),
                                         fast_service("worker", "--interval", "0.5")])
    running = mpb.SERVICE_STATE_RUNNING
    assert_eventually(lambda: m.status("worker").state == running, 10)
    with ws(m, f"/api/events/ws?subject=service/worker&limit=3&token={VIEWER}") as conn:
        first = recv_json(conn)
        assert set(first) == {"type", "recent", "last_id", "events"}
        assert first["type"] == "events" and first["recent"] is True
        recent = first["events"]
        assert 1 <= len(recent) <= 3
        assert all(set(e) == EVENT_KEYS and e["subject"] == "service/worker" for e in recent)
        assert [e["id"] for e in recent] == sorted(e["id"] for e in recent)
        assert recent[-1]["id"] <= first["last_id"]
        psutil.Process(m.status("worker").pid).kill()
        assert m.http("POST", "/api/services/web/stop")[0] == 200  # another subject
        live: list[dict[str, Any]] = []

        def restarted(msg: dict[str, Any]) -> bool:
            assert msg["type"] == "events" and "recent" not in msg
            live.extend(msg["events"])
            return any(e["kind"] == "service.restart" for e in live)

        until(conn, restarted)
        assert any(e["kind"] == "service.state" and "SIGKILL" in e["message"] for e in live), live
        assert_eventually(lambda: m.status("worker").state == running, 10)
        assert m.http("POST", "/api/services/worker/stop")[0] == 200
        until(conn, lambda msg: live.extend(msg["events"]) or
              any(e["kind"] == "audit.stop" for e in live))
        audit = next(e for e in live if e["kind"] == "audit.stop")
        assert (audit["actor"], audit["transport"], audit["result"]) == ("default", "http", "ok")
        assert audit["peer"].startswith("127.0.0.1:")
        assert {e["subject"] for e in live} == {"service/worker"}
        ids = [e["id"] for e in recent + live]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, none twice
        assert ids[len(recent)] > first["last_id"]


@pytest.mark.parametrize(("query", "status"), [
    ("limit=0", 400), ("limit=201", 400), ("limit=x", 400), ("limit=" + "9" * 30, 400),
    ("kind=Bad!", 400), ("subject=" + "s" * 300, 400), ("subject=service/[x]", 400),
    ("after_id=5", 400), ("bogus=1", 400), ("limit=1&limit=2", 400),
])
def test_events_socket_bad_parameters_are_refused_before_the_upgrade(
        make_manager, tmp_path, query, status) -> None:
    m = tokened(make_manager, tmp_path, [fast_service("web", "--interval", "1")])
    code, _ = m.http("GET", f"/api/events/ws?{query}", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert code == status
    # without a token: the handshake, then 1008 before any data (nothing is told)
    with ws(m, "/api/events/ws?subject=service/web") as conn:
        assert closed_with(conn) == (1008, "missing or invalid bearer token")
    assert m.status("web").pid  # the manager is up and unchanged


def test_update_socket_needs_updates_configured(manager) -> None:
    code, body = raw_get(manager, "/api/updates/0123456789abcdef0123456789abcdef/ws",
                         upgrade=True)
    assert code == 501 and "updates are not configured" in body["error"]
    code, body = raw_get(manager, "/api/updates/not..an-id/ws", upgrade=True)
    assert code == 400


# ---- auth --------------------------------------------------------------------------------

def test_no_or_a_wrong_token_is_closed_1008_and_a_viewer_watches_but_cannot_act(
        make_manager, tmp_path) -> None:
    m = tokened(make_manager, tmp_path, [fast_service("web", "--interval", "0.2")])
    pid = m.status("web").pid
    for path in ("/api/services/ws", f"/api/services/ws?token={VIEWER}x",
                 "/api/services/web/logs/ws", "/api/services/nosuch/logs/ws?tail=zz"):
        with ws(m, path) as conn:
            assert closed_with(conn) == (1008, "missing or invalid bearer token")
    with ws(m, "/api/services/ws", additional_headers={"Authorization": "Bearer nope"}) as conn:
        assert closed_with(conn)[0] == 1008
    with ws(m, f"/api/services/ws?token={VIEWER}") as conn:
        snap = recv_json(conn)
        assert snap["caller"] == {"name": "viewer", "role": "read"}
        assert snap["services"][0]["pid"] == pid
    with ws(m, "/api/services/web/logs/ws?tail=1",
            additional_headers={"Authorization": f"Bearer {VIEWER}"}) as conn:
        assert recv_json(conn)["type"] == "logs"
    code, body = m.http("POST", "/api/services/web/stop",
                        headers={"Authorization": f"Bearer {VIEWER}"})
    assert code == 403 and "read-only" in json.loads(body)["error"]
    assert m.status("web").pid == pid
    with ws(m, f"/api/services/ws?token={ADMIN}") as conn:
        assert recv_json(conn)["caller"] == {"name": "default", "role": "admin"}
    assert ADMIN not in m.logs() and VIEWER not in m.logs()
    # what a request names is checked for callers with a token only
    assert raw_get(m, "/api/services/nosuch/logs/ws", upgrade=True,
                   token=VIEWER)[0] == 404
    assert raw_get(m, "/api/services/web/logs/ws?tail=99999", upgrade=True,
                   token=VIEWER)[0] == 400


# ---- bad clients -------------------------------------------------------------------------

def test_binary_oversized_and_floods_are_closed_and_the_manager_stays_up(manager) -> None:
    m = manager
    with ws(m, "/api/services/ws") as conn:
        recv_json(conn)
        conn.send(b"\x00binary")
        assert closed_with(conn)[0] == 1003
    with ws(m, "/api/services/ws") as conn:
        recv_json(conn)
        conn.send("x" * 100_000)
        assert closed_with(conn)[0] == 1009
    with ws(m, "/api/services/ws") as conn:
        recv_json(conn)
        with pytest.raises(ConnectionClosed) as got:
            flood(conn, 10_000)
        assert got.value.rcvd is not None and got.value.rcvd.code == 1008
    with ws(m, "/api/services/ws") as conn:
        assert recv_json(conn)["type"] == "snapshot"
    assert m.http("GET", "/status")[0] == 200


def flood(conn: ClientConnection, n: int) -> None:
    """Send n messages, then wait for one (the manager's close ends both)."""
    for i in range(n):
        conn.send(f"hello {i}")
    conn.recv(timeout=10)


def test_a_reader_that_never_reads_stays_bounded_and_others_stay_live(make_manager) -> None:
    """Twenty services that fail at once and restart every few milliseconds produce
    hundreds of changes a second. While a client reads nothing, the manager's memory
    stays flat (it holds at most one status per service for it; at this rate the
    kernel's socket buffers take the rest: the coalescing itself is shown with 200 MB
    of updates in tests/test_websocket.py), a reading client sees every change as it
    happens, and once the stalled client reads, it gets the latest status of each
    service."""
    churn = [{"name": f"flap{i}", "command": ["/bin/false"], "start_secs": 0.0,
              "backoff_initial": 0.001, "backoff_max": 0.002, "backoff_jitter": 0.0,
              "crash_loop_max": 0} for i in range(20)]
    m = make_manager([fast_service("web", "--interval", "1"), *churn]).start()
    proc = psutil.Process(m.info["pid"])
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    stalled.connect(("127.0.0.1", m.http_port))
    stalled.sendall(b"GET /api/services/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    try:
        with ws(m, "/api/services/ws") as reader:
            recv_json(reader)
            rss0 = proc.memory_info().rss
            seen = 0
            started = time.monotonic()
            # at least 6 s and 500 changes (a loaded machine churns slower: wait for them)
            while (time.monotonic() - started < 6 or seen <= 500) \
                    and time.monotonic() - started < 90:
                recv_json(reader)
                seen += 1
            rss1 = proc.memory_info().rss
            assert seen > 500, f"only {seen} changes in 90 s: not enough churn to tell"
            # the other client is unaffected: a stop shows at once
            assert m.http("POST", "/api/services/web/stop")[0] == 200
            t0 = time.monotonic()
            until(reader, is_state("web", "STOPPED"))
            assert time.monotonic() - t0 < 5.0  # generous: not behind the stalled backlog
            for svc in churn:
                assert m.http("POST", f"/api/services/{svc['name']}/stop")[0] == 200
            for svc in churn:
                until(reader, is_state(svc["name"], "STOPPED"))
        assert rss1 - rss0 < 16 << 20, f"manager RSS grew {(rss1 - rss0) >> 20} MB"
        # the stalled client now reads: far fewer messages than changes, ending with the
        # latest state of every service
        stalled.settimeout(10)
        # a 4 KiB window trickles (delayed ACKs): open it now that the client reads
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        data = b""
        latest: dict[str, str] = {}
        messages = 0
        head_done = False
        deadline = time.monotonic() + 20
        while (len(latest) < 21 or set(latest.values()) != {"STOPPED"}) \
                and time.monotonic() < deadline:
            chunk = stalled.recv(1 << 16)
            assert chunk, "the manager closed the stalled client"
            data += chunk
            if not head_done:
                if b"\r\n\r\n" not in data:
                    continue
                data = data.split(b"\r\n\r\n", 1)[1]
                head_done = True
            while (frame := server_frame(data)) is not None:
                payload, data = frame
                messages += 1
                msg = json.loads(payload)
                for s in msg.get("services", [msg.get("service")]):
                    if s:
                        latest[s["name"]] = s["state"]
        assert latest == dict.fromkeys(latest, "STOPPED") and len(latest) == 21
        assert messages > 0
    finally:
        stalled.close()
    assert m.http("GET", "/status")[0] == 200


def server_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """One unmasked text frame (server to client) off the front of data, if complete."""
    if len(data) < 2:
        return None
    n, at = data[1] & 0x7F, 2
    if n == 126:
        if len(data) < 4:
            return None
        n, at = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        if len(data) < 10:
            return None
        n, at = int.from_bytes(data[2:10], "big"), 10
    if len(data) < at + n:
        return None
    assert data[0] == 0x81, data[:2]  # FIN + text: the manager does not fragment
    return data[at:at + n], data[at + n:]


# ---- unknown paths and the static page ---------------------------------------------------

def raw_get(m: ManagerProc, target: str, *, upgrade: bool = False, token: str = "",
            method: str = "GET", extra: str = "") -> tuple[int, Any]:
    """One request sent as raw bytes (the target exactly as given), its answer."""
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if upgrade:
        head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    with socket.create_connection(("127.0.0.1", m.http_port), timeout=10) as s:
        s.sendall((head + extra + "\r\n").encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (x.split(": ", 1) for x in lines[1:] if ": " in x)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(lines[0].split()[1])
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, body


HOSTILE = [
    "/ui/../../../../etc/passwd", "/ui/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/ui/..%2f..%2f..%2fetc%2fpasswd", "/ui/%2E%2E%2F%2E%2E%2Fmanager%2Fconfig.py",
    "/ui/shared%2f..%2f..%2fhttp_server.py", "/ui/shared/../../manager/api/ws_routes.py",
    "/ui/shared/../ws_routes.py", "/ui/..", "/ui/.", "/ui/./index.html", "/ui//etc/passwd",
    "/ui/%00", "/ui/index.html%00.js", "/ui/index.html%2500", "/ui/%252e%252e/%252e%252e/",
    "/ui/..\\..\\etc\\passwd", "/ui/shared/%5c..%5c..%5cauth.py", "/ui/.hidden",
    "/ui/__init__.py", "/ui/shared/__pycache__/", "/ui/shared/../../errors.py",
    "/ui/" + "a/" * 200, "/ui/index.html/", "/ui/services.js/..",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_no_path_leaves_the_static_root(manager, target) -> None:
    status, body = raw_get(manager, target)
    assert status in (400, 404), (target, status, body)
    text = json.dumps(body) if isinstance(body, dict) else body.decode("latin-1")
    assert "root:" not in text and "import" not in text and "<html" not in text


def test_static_page_headers_types_and_caching(manager) -> None:
    m = manager
    for path, kind in (("/ui/", "text/html; charset=utf-8"),
                       ("/ui/index.html", "text/html; charset=utf-8"),
                       ("/ui/services.js", "text/javascript; charset=utf-8"),
                       ("/ui/services.css", "text/css; charset=utf-8"),
                       ("/ui/shared/base.css", "text/css; charset=utf-8"),
                       ("/ui/shared/live.js", "text/javascript; charset=utf-8"),
                       ("/ui/shared/icon.svg", "image/svg+xml")):
        conn_headers = fetch(m, path)
        status, headers, body = conn_headers
        assert status == 200 and headers["content-type"] == kind, path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "connect-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-cache" and headers["etag"].startswith('"')
        assert "set-cookie" not in headers
        again = fetch(m, path, {"If-None-Match": headers["etag"]})
        assert again[0] == 304 and again[2] == b""
        head = fetch(m, path, method="HEAD")
        assert head[0] == 200 and head[2] == b"" and head[1]["content-length"] == str(len(body))
    page = fetch(m, "/ui/")[2].decode()
    assert "<script type=\"module\" src=\"services.js\">" in page
    assert "<style" not in page and " style=" not in page and "onclick" not in page
    status, headers, _ = fetch(m, "/ui")
    assert (status, headers["location"]) == (308, "/ui/")
    assert fetch(m, "/")[0] == 404  # as before: the page lives at /ui/ only
    assert raw_get(m, "/ui/", method="POST")[0] == 405
    assert raw_get(m, "/ui/nosuch.js")[0] == 404
    assert raw_get(m, "/ui/index.html?x=1")[0] == 400


def fetch(m: ManagerProc, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", m.http_port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_unknown_api_paths(make_manager, tmp_path) -> None:
    m = tokened(make_manager, tmp_path, [fast_service("web")])
    assert raw_get(m, "/api/nope", token=ADMIN) == (404, {"success": False,
                                                          "error": "no endpoint '/api/nope'"})
    assert raw_get(m, "/api/nope")[0] == 401  # no probing without a token
    assert raw_get(m, "/api/services/ws", method="POST", token=ADMIN)[0] == 405
    assert raw_get(m, "/api/services/ws", token=ADMIN)[0] == 426  # no Upgrade
    assert raw_get(m, "/api/services/web/logs/ws/extra", token=ADMIN)[0] == 404
    # the page itself needs no token (it asks for one); its data does
    assert raw_get(m, "/ui/shared/auth.js")[0] == 200


# ---- updates -----------------------------------------------------------------------------

def test_update_progress_over_both_sockets(env) -> None:
    """A real update (tests/update_support.py): the status socket shows the service
    going down and up on the new version, then the outcome; the update socket replays
    every step of the operation and closes with 1000 after the final one."""
    from tests.update_support import started, update

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    name = m.status().name
    with ws(m, "/api/services/ws") as conn:
        recv_json(conn)
        op = update(m, "1.1.0")
        states = []
        done = until(conn, lambda msg: msg.get("type") == "status"
                     and not states.append(msg["service"]["state"])
                     and msg["service"]["update"]["last_operation_id"] == op, 60)
        u = done["service"]["update"]
        assert (u["last_outcome"], u["last_version"], u["running_operation_id"]) == (
            "succeeded", "1.1.0", "")
        assert done["service"]["version"] == "1.1.0"
        assert "STOPPED" in states or "STOPPING" in states, states
    with ws(m, f"/api/updates/{op}/ws") as conn:
        head = recv_json(conn)
        assert head == {"type": "operation", "operation_id": op, "service": name,
                        "kind": "update", "from_version": "1.0.0", "to_version": "1.1.0",
                        "created": head["created"]}
        events = []
        while not (events and events[-1]["final"]):
            events.append(recv_json(conn))
        assert [f"{e['step']}:{e['status']}" for e in events] == [
            "validate:ok", "download:started", "download:ok", "verify:started", "verify:ok",
            "stage:started", "stage:ok", "stop:started", "stop:ok", "switch:started",
            "switch:ok", "start:started", "start:ok", "health:started", "health:ok",
            "commit:started", "commit:ok", "done:ok"]
        assert set(events[0]) == {"type", "operation_id", "seq", "step", "status", "message",
                                  "elapsed_seconds", "at", "final", "outcome"}
        assert events[-1]["outcome"] == "succeeded"
        assert closed_with(conn) == (1000, "")
    assert raw_get(m, "/api/updates/0123456789abcdef0123456789abcdef/ws",
                   upgrade=True)[0] == 404
