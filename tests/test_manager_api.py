"""The manager's two APIs end to end: real grpcurl, real curl with the seeds' commands,
the gRPC stubs, auth, and bad input that must change nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from backendai.auth import write_token
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from tests.conftest import ManagerProc, assert_eventually, fast_service

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
CURL = shutil.which("curl")
RUNNING = pb.SERVICE_STATE_RUNNING
GRPC_THREADS = 64  # the default grpc_max_calls


def grpcurl(m: ManagerProc, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    extra = ["-H", f"authorization: Bearer {m.token}"] if m.token else []
    return subprocess.run([GRPCURL, "-plaintext", *extra, *args], capture_output=True,
                          text=True, timeout=timeout)


def curl(*args: str) -> tuple[int, str]:
    assert CURL, "curl is installed by scripts/bootstrap.sh"
    out = subprocess.run([CURL, "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                         text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


@pytest.fixture
def manager(make_manager) -> ManagerProc:
    m = make_manager([fast_service("ai-agent", "--interval", "0.05",
                                   package="@backend-ai/agent", version="2.1.44"),
                      fast_service("helper", "--interval", "1")]).start()
    assert_eventually(lambda: all(m.status(s).state == RUNNING for s in ("ai-agent", "helper")))
    return m


def test_grpcurl_list_describe_and_call(manager):
    addr = manager.grpc_addr
    out = grpcurl(manager, addr, "list")
    assert out.returncode == 0, out.stderr
    services = out.stdout.split()
    assert {"backendai.v1.Manager", "grpc.health.v1.Health"} <= set(services)
    out = grpcurl(manager, addr, "describe", "backendai.v1.Manager")
    assert out.returncode == 0 and "rpc StreamLogs" in out.stdout
    assert "rpc WatchStatus" in out.stdout
    out = grpcurl(manager, "-d", '{"service": "ai-agent"}', addr, "backendai.v1.Manager/Status")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["state"] == "SERVICE_STATE_RUNNING" and st["name"] == "ai-agent"
    assert st["version"] == "2.1.44"
    out = grpcurl(manager, addr, "grpc.health.v1.Health/Check")
    assert json.loads(out.stdout)["status"] == "SERVING"


def test_grpcurl_streamlogs_follows(manager):
    proc = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", '{"tail_lines": 2}', manager.grpc_addr,
         "backendai.v1.Manager/StreamLogs"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        got = threading.Event()

        def read():
            buf = ""
            for line in proc.stdout:
                buf += line
                if line.startswith("}"):
                    seen.extend(json.loads(buf).get("lines", []))
                    buf = ""
                    ticks = [s for s in seen if s.startswith("tick")]
                    if len(ticks) >= 6:
                        got.set()
                        return

        threading.Thread(target=read, daemon=True).start()
        assert got.wait(30), seen
        nums = [int(s.split()[1]) for s in seen if s.startswith("tick")]
        assert nums == sorted(nums) and len(set(nums)) == len(nums)  # in order, no repeats
        assert nums[-1] - nums[0] == len(nums) - 1  # no gaps while following
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_grpcurl_error_codes(manager):
    out = grpcurl(manager, "-d", '{"service": "nope"}', manager.grpc_addr,
                  "backendai.v1.Manager/Status")
    assert out.returncode == 64 + grpc.StatusCode.NOT_FOUND.value[0]
    assert "no service named 'nope'" in out.stderr


def test_seed_curl_commands(manager):
    base = f"http://127.0.0.1:{manager.http_port}"
    code, body = curl(f"{base}/status")
    assert code == 200
    data = json.loads(body)
    assert list(data)[:3] == ["running", "managerVersion", "workingDirectory"]
    assert data["running"] is True and isinstance(data["managerVersion"], str)
    assert body.startswith('{"running": true, "managerVersion": ')
    code, body = curl(f"{base}/version")
    assert code == 200 and body.startswith(
        '{"version": "2.1.44", "name": "@backend-ai/agent"')
    code, body = curl(f"{base}/logs?lines=100")
    data = json.loads(body)
    assert code == 200 and data["service"] == "ai-agent" and data["lines"] == 100
    assert "tick" in data["logs"]
    old_pid = manager.status().pid
    code, body = curl("-X", "POST", f"{base}/restart")
    assert (code, body) == (200, '{"success": true}')
    assert manager.status().pid != old_pid
    code, body = curl("-X", "POST", f"{base}/stop")
    assert (code, body) == (200, '{"success": true}')
    assert json.loads(curl(f"{base}/status")[1])["running"] is False
    code, body = curl("-X", "POST", f"{base}/start")
    assert (code, body) == (200, '{"success": true}')
    assert json.loads(curl(f"{base}/status")[1])["running"] is True
    # Updates are not configured on this manager: a clear error, not a 200.
    code, body = curl("-X", "POST", f"{base}/update", "-H", "Content-Type: application/json",
                      "-d", '{"version": "2.1.44"}')
    assert code >= 400 and json.loads(body)["success"] is False


def test_per_service_routes(manager):
    status, body = manager.http("GET", "/api/services?page=1&page_size=1")
    data = json.loads(body)
    assert status == 200 and data["success"] and data["count"] == 1
    assert data["meta"] == {"page": 1, "page_size": 1, "total": 2, "pages": 2}
    assert data["services"][0]["name"] == "ai-agent"
    status, body = manager.http("POST", "/api/services/helper/stop?timeout=5&force=false")
    assert status == 200 and json.loads(body)["success"]
    assert manager.status("helper").state == pb.SERVICE_STATE_STOPPED
    assert manager.status("ai-agent").state == RUNNING
    status, body = manager.http("POST", "/api/services/helper/start")
    data = json.loads(body)
    assert status == 200 and data["pid"] == manager.status("helper").pid
    status, body = manager.http("GET", "/api/services/helper/logs?lines=5")
    assert status == 200 and json.loads(body)["service"] == "helper"


@pytest.mark.parametrize(("method", "path", "body", "headers", "code"), [
    ("GET", "/api/services/nope/status", None, {}, 404),
    ("POST", "/api/services/nope/stop", None, {}, 404),
    ("GET", "/logs?lines=abc", None, {}, 400),
    ("GET", "/logs?lines=-1", None, {}, 400),
    ("GET", "/logs?lines=1000000000000", None, {}, 400),
    ("POST", "/update", "{not json", {"Content-Type": "application/json"}, 400),
    ("POST", "/update", '{"version": "1"}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/update", "x" * 200_000, {"Content-Type": "application/json"}, 413),
    ("GET", "/nope", None, {}, 404),
    ("DELETE", "/status", None, {}, 405),
    ("GET", "/start", None, {}, 405),
    ("POST", "/api/services/helper/stop?timeout=abc", None, {}, 400),
    ("POST", "/api/services/helper/stop?force=maybe", None, {}, 400),
    ("GET", "/api/services?page=0", None, {}, 400),
    ("POST", "/stop?service=../../etc", None, {}, 400),
    ("POST", "/update", '{"version": "../../x"}', {"Content-Type": "application/json"}, 400),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_bad_http_requests_get_clear_errors_and_change_nothing(manager, method, path, body,
                                                               headers, code):
    before = {s: manager.status(s) for s in ("ai-agent", "helper")}
    status, raw = manager.http(method, path, body, headers)
    assert status == code, raw
    data = json.loads(raw)
    assert data["success"] is False and data["error"]
    assert "Traceback" not in data["error"]
    for name, st in before.items():
        after = manager.status(name)
        assert (after.pid, after.state, after.restarts) == (st.pid, st.state, st.restarts)


@pytest.mark.parametrize(("call", "code"), [
    (lambda s: s.Status(pb.StatusRequest(service="nope"), timeout=10), "NOT_FOUND"),
    (lambda s: s.Status(pb.StatusRequest(service="../x"), timeout=10), "INVALID_ARGUMENT"),
    (lambda s: s.Status(pb.StatusRequest(service="x" * 10_000), timeout=10),
     "INVALID_ARGUMENT"),
    (lambda s: s.Logs(pb.LogsRequest(lines=10**9), timeout=10), "INVALID_ARGUMENT"),
    (lambda s: s.Stop(pb.StopRequest(timeout_seconds=-1), timeout=10), "INVALID_ARGUMENT"),
    (lambda s: s.Stop(pb.StopRequest(timeout_seconds=float("nan")), timeout=10),
     "INVALID_ARGUMENT"),
    (lambda s: s.Stop(pb.StopRequest(service="nope"), timeout=10), "NOT_FOUND"),
    (lambda s: s.ListServices(pb.ListServicesRequest(pattern="*" * 1000), timeout=10),
     "INVALID_ARGUMENT"),
    (lambda s: list(s.StreamLogs(pb.StreamLogsRequest(tail_lines=10**9), timeout=10)),
     "INVALID_ARGUMENT"),
    (lambda s: list(s.WatchStatus(pb.WatchStatusRequest(service="nope"), timeout=10)),
     "NOT_FOUND"),
    (lambda s: s.Update(pb.UpdateRequest(version="1.0"), timeout=10), "FAILED_PRECONDITION"),
    (lambda s: s.Update(pb.UpdateRequest(version="../../x"), timeout=10), "INVALID_ARGUMENT"),
    (lambda s: s.Update(pb.UpdateRequest(), timeout=10), "INVALID_ARGUMENT"),
    (lambda s: list(s.WatchUpdate(pb.WatchUpdateRequest(operation_id="nope"), timeout=10)),
     "INVALID_ARGUMENT"),
    (lambda s: list(s.WatchUpdate(pb.WatchUpdateRequest(operation_id="0" * 32), timeout=10)),
     "FAILED_PRECONDITION"),
])
def test_bad_grpc_requests_get_status_codes_and_change_nothing(manager, call, code):
    before = manager.status()
    with pytest.raises(grpc.RpcError) as err:
        call(manager.stub())
    assert err.value.code().name == code
    after = manager.status()
    assert (after.pid, after.state, after.restarts) == (before.pid, before.state,
                                                         before.restarts)


def test_a_bad_version_is_refused_before_missing_updates_on_both_transports(manager):
    """This manager has no updates configured: a bad version is still a bad request
    (400 / INVALID_ARGUMENT naming the version), as a missing one is; only a good
    version learns that updates are not configured (501 / FAILED_PRECONDITION)."""
    json_type = {"Content-Type": "application/json"}
    status, raw = manager.http("POST", "/update", '{"version": "../../x"}', json_type)
    error = json.loads(raw)["error"]
    assert status == 400 and error.startswith("version may only hold") and "'../../x'" in error
    status, raw = manager.http("POST", "/update", '{"version": "2.1.45"}', json_type)
    assert status == 501 and "updates are not configured" in json.loads(raw)["error"]
    with pytest.raises(grpc.RpcError) as err:
        manager.stub().Update(pb.UpdateRequest(version="../../x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == error
    with pytest.raises(grpc.RpcError) as err:
        manager.stub().Update(pb.UpdateRequest(version="2.1.45"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "updates are not configured" in err.value.details()


def test_watch_status_sends_current_then_changes(manager):
    stream = manager.stub().WatchStatus(pb.WatchStatusRequest(service="helper"), timeout=60)
    first = next(stream)
    assert first.state == RUNNING
    manager.stub().Stop(pb.StopRequest(service="helper"), timeout=30)
    states = []
    for st in stream:
        states.append(st.state)
        if st.state == pb.SERVICE_STATE_STOPPED:
            break
    stream.cancel()
    assert states == [pb.SERVICE_STATE_STOPPING, pb.SERVICE_STATE_STOPPED]


def test_cancelled_streams_give_their_threads_back(manager):
    """Each open stream holds one of the manager's gRPC threads (`grpc_max_calls`,
    default 64): streams that clients cancel, or whose deadline passes, must release
    theirs, or the manager would stop answering after 64 of them."""
    for i in range(GRPC_THREADS + 16):
        if i % 2:
            stream = manager.stub().WatchStatus(pb.WatchStatusRequest(service="helper"),
                                                timeout=30)
        else:
            stream = manager.stub().StreamLogs(pb.StreamLogsRequest(service="ai-agent",
                                                                   tail_lines=1), timeout=30)
        next(stream)
        stream.cancel()
    for _ in range(GRPC_THREADS + 16):  # idle watchers whose deadline ends them
        with pytest.raises(grpc.RpcError) as info:
            list(manager.stub().WatchStatus(pb.WatchStatusRequest(service="helper"),
                                            timeout=0.05))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_eventually(lambda: manager.status("helper").state == RUNNING, 10)
    ok = manager.stub().Restart(pb.RestartRequest(service="helper"), timeout=30)
    assert ok.state == RUNNING


def test_more_streams_than_threads_are_refused_and_then_served_again(make_manager):
    manager = make_manager([fast_service("helper", "--interval", "1")],
                           top={"grpc_max_calls": 8}).start()
    assert_eventually(lambda: _status_ok(manager))
    streams = []
    try:
        for _ in range(8):
            stream = manager.stub().WatchStatus(pb.WatchStatusRequest(service="helper"),
                                                timeout=60)
            next(stream)  # it is being served: it holds a thread
            streams.append(stream)
        with pytest.raises(grpc.RpcError) as info:
            manager.status("helper")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the HTTP API does not share the gRPC threads
        code, body = manager.http("GET", "/status")
        assert code == 200 and json.loads(body)["running"] is True
    finally:
        for stream in streams:
            stream.cancel()
    assert_eventually(lambda: _status_ok(manager), 10, what="served again")
    assert manager.proc is not None and manager.proc.poll() is None


def _status_ok(m: ManagerProc) -> bool:
    try:
        return m.status("helper").state == RUNNING
    except grpc.RpcError:
        return False


def test_token_required_everywhere_when_configured(make_manager, tmp_path):
    token_file = tmp_path / "token"
    write_token(token_file, "s3cret-token")
    m = make_manager([fast_service("svc", "--interval", "1")],
                     top={"auth_token_file": str(token_file)})
    m.start()
    m.token = "s3cret-token"
    assert_eventually(lambda: m.status().state == RUNNING)
    m.token = None
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Stop(pb.StopRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Status(pb.StatusRequest(), timeout=10,
                        metadata=[("authorization", "Bearer wrong")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        list(m.stub().StreamLogs(pb.StreamLogsRequest(), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status, body = m.http("POST", "/stop")
    assert status == 401 and json.loads(body)["success"] is False
    status, _ = m.http("POST", "/stop", headers={"Authorization": "Bearer nope"})
    assert status == 401
    assert m.service_processes(), "nothing was stopped"
    # Health and reflection stay open for probes and `grpcurl list`.
    out = grpcurl(m, m.grpc_addr, "list")
    assert out.returncode == 0
    m.token = "s3cret-token"
    assert m.status().state == RUNNING
    status, body = m.http("POST", "/stop")
    assert (status, body) == (200, b'{"success": true}')


def test_non_loopback_listen_needs_a_token(make_manager):
    m = make_manager([fast_service("svc")], top={"http_listen": "0.0.0.0:0"})
    m.write_config()
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config", str(m.config_path)],
                         capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 2
    assert "auth_token_file" in out.stderr and "loopback" in out.stderr
    assert m.service_processes() == []


def test_token_file_readable_by_others_is_refused(make_manager, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    os.chmod(token_file, 0o644)
    m = make_manager([fast_service("svc")], top={"auth_token_file": str(token_file)})
    m.write_config()
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config", str(m.config_path)],
                         capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 1 and "auth_token_file" in out.stderr


def test_grpc_on_a_unix_socket_for_local_clients(make_manager, tmp_path):
    sock = tmp_path / "run" / "manager.sock"
    write_token(tmp_path / "t.token", "sock-secret")
    m = make_manager([fast_service("svc")], top={
        "grpc_socket": str(sock), "auth_token_file": str(tmp_path / "t.token")})
    m.token = "sock-secret"
    m.start()
    assert m.info["grpc_socket"] == str(sock)
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = pb_grpc.ManagerStub(ch)
        assert_eventually(lambda: stub.Status(pb.StatusRequest(), timeout=5,
                                              metadata=m.metadata()).state == RUNNING)
        with pytest.raises(grpc.RpcError) as info:  # the token is required here too
            stub.Status(pb.StatusRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    out = subprocess.run([GRPCURL, "-plaintext", "-unix", "-H", "authorization: Bearer sock-secret",
                          str(sock), "backendai.v1.Manager/Status"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "svc", out.stderr
    # kill -9 leaves the socket file behind: the next start replaces it
    m.kill9()
    assert sock.exists()
    m.start()
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        st = pb_grpc.ManagerStub(ch).Status(pb.StatusRequest(), timeout=5, metadata=m.metadata())
        assert st.state == RUNNING
    # a clean stop removes it
    assert m.stop() == 0
    assert not sock.exists()


def test_grpc_socket_path_that_is_not_a_socket_is_refused(make_manager, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    m = make_manager([fast_service("svc")], top={"grpc_socket": str(target)})
    m.write_config()
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config",
                          str(m.config_path)], capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 1 and "exists and is not a socket" in out.stderr, out.stderr
    assert target.read_text() == "keep me\n"
    assert m.service_processes() == []


@pytest.mark.parametrize(("key", "value", "message"), [
    ("grpc_socket", "relative.sock", "grpc_socket: must be an absolute path"),
    ("grpc_socket", "/" + "x" * 120, "at most 107 bytes"),
    ("grpc_socket", 7, "grpc_socket: must be a string"),
    ("grpc_max_calls", 0, "grpc_max_calls: must be between 4 and 4096"),
    ("grpc_max_calls", 10**9, "grpc_max_calls: must be between 4 and 4096"),
    ("grpc_max_calls", "64", "grpc_max_calls: must be an integer"),
    ("grpc_max_calls", True, "grpc_max_calls: must be an integer"),
])
def test_bad_grpc_listener_config(tmp_path, key, value, message):
    from backendai.errors import ConfigError
    from manager import config

    with pytest.raises(ConfigError) as info:
        config.parse({"state_dir": str(tmp_path), key: value,
                      "services": [{"name": "svc", "command": ["true"]}]})
    assert message in str(info.value)


def test_sigterm_with_open_streams_stops_cleanly(manager):
    """Streams in progress (a watcher, a log follower) end when the manager stops: the
    clients see the stream close, the manager exits 0, the services keep running."""
    watch = manager.stub().WatchStatus(pb.WatchStatusRequest(service="helper"), timeout=60)
    follow = manager.stub().StreamLogs(pb.StreamLogsRequest(service="ai-agent", tail_lines=1),
                                       timeout=60)
    next(watch)
    next(follow)
    before = {p.pid for p in manager.service_processes()}
    assert manager.stop() == 0  # SIGTERM; waits at most 20 s
    for stream in (watch, follow):
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert {p.pid for p in manager.service_processes()} == before
