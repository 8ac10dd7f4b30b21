"""Named tokens with roles (backendai/auth.py): the config keys, who a caller is on
HTTP and gRPC (both server flavours, with and without TLS client certificates), what a
read-only token may do, tokens never logged, SIGHUP re-reading every token file. Real
servers on 127.0.0.1 port 0 and a real manager process."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from backendai.auth import (
    Identity,
    Role,
    Token,
    Tokens,
    TokenSpec,
    grpc_identity,
    is_read_method,
    write_token,
)
from backendai.errors import ConfigError
from backendai.grpc_server import GrpcServer
from backendai.http_router import Router, open_access
from backendai.http_server import HttpServer, Request, take_query_token
from backendai.listen import ListenAddress
from backendai.tls import ServerTLS, read_pem
from backendai.v1 import manager_pb2 as pb
from manager import config as manager_config
from tests.conftest import assert_eventually, fast_service
from tests.fixtures.hub_procs import make_certs

ADMIN, VIEWER, OTHER = "admin-secret-1", "viewer-secret-2", "other-admin-3"


def token_files(tmp_path: Path, **tokens: str) -> dict[str, Path]:
    out = {}
    for name, value in tokens.items():
        out[name] = tmp_path / f"{name}.token"
        write_token(out[name], value)
    return out


def two_tokens() -> Tokens:
    return Tokens([Token(ADMIN.encode(), name="default"),
                   Token(VIEWER.encode(), name="viewer", role=Role.READ)])


# ---- the pieces ------------------------------------------------------------------------

def test_tokens_load_name_and_role_every_caller(tmp_path) -> None:
    files = token_files(tmp_path, admin=ADMIN, viewer=VIEWER, other=OTHER)
    tokens = Tokens.load(files["admin"], [TokenSpec("viewer", files["viewer"], Role.READ),
                                          TokenSpec("deploy", files["other"], Role.ADMIN)])
    assert tokens is not None
    assert [(t.name, t.role, t.key) for t in tokens.tokens] == [
        ("default", Role.ADMIN, "auth_token_file"),
        ("viewer", Role.READ, "auth_tokens[0].file"),
        ("deploy", Role.ADMIN, "auth_tokens[1].file")]
    got = {given: tokens.identify(given.encode() if given else None, peer="1.2.3.4:5",
                                  transport="http")
           for given in (ADMIN, VIEWER, OTHER, "wrong", "", None)}
    assert got[ADMIN] == Identity("default", Role.ADMIN, "1.2.3.4:5", "http")
    assert got[VIEWER].name == "viewer" and got[VIEWER].role is Role.READ
    assert not got[VIEWER].can_act and got[OTHER].can_act and got[OTHER].name == "deploy"
    for bad in ("wrong", "", None):
        assert got[bad] == Identity("anonymous", None, "1.2.3.4:5", "http")
        assert not got[bad].authenticated
    assert Tokens.load(None, []) is None


def test_tokens_must_differ_and_have_unique_names(tmp_path) -> None:
    files = token_files(tmp_path, a=ADMIN, b=ADMIN)
    with pytest.raises(ConfigError, match=r"auth_tokens\[0\].file: the same token as "
                                          "'default'"):
        Tokens.load(files["a"], [TokenSpec("copy", files["b"])])
    with pytest.raises(ConfigError, match="two tokens named 'x'"):
        Tokens([Token(b"1", name="x"), Token(b"2", name="x")])
    files["b"].chmod(0o644)
    with pytest.raises(ConfigError, match=r"auth_tokens\[0\].file: .*\(chmod 600\)"):
        Tokens.load(None, [TokenSpec("loose", files["b"])])


@pytest.mark.parametrize(("method", "read"), [
    ("/backendai.v1.Manager/Status", True), ("/backendai.v1.Manager/ListServices", True),
    ("/backendai.v1.Manager/Version", True), ("/backendai.v1.Manager/Logs", True),
    ("/backendai.v1.Manager/StreamLogs", True), ("/backendai.v1.Manager/WatchStatus", True),
    ("/backendai.v1.Manager/WatchUpdate", True), ("/backendai.v1.Manager/GetUpdate", True),
    ("/backendai.v1.Manager/ListEvents", True), ("/backendai.v1.Manager/WatchEvents", True),
    ("/backendai.v1.Manager/ListReleases", True), ("/backendai.v1.Hub/HostStatus", True),
    ("/backendai.v1.Hub/StreamHostLogs", True), ("/backendai.v1.Hub/GetRollout", True),
    ("/backendai.v1.Manager/Start", False), ("/backendai.v1.Manager/Stop", False),
    ("/backendai.v1.Manager/Restart", False), ("/backendai.v1.Manager/Update", False),
    ("/backendai.v1.Manager/Rollback", False), ("/backendai.v1.Manager/Reload", False),
    ("/backendai.v1.Hub/Register", False), ("/backendai.v1.Hub/Heartbeat", False),
    ("/backendai.v1.Hub/StartRollout", False), ("/backendai.v1.Hub/AbortRollout", False),
    ("/backendai.v1.Hub/RestartService", False), ("/backendai.v1.Hub/StopService", False),
    ("/backendai.v1.Hub/RetryFailed", False), ("/backendai.v1.Hub/PromoteRollout", False),
])
def test_read_methods(method, read) -> None:
    assert is_read_method(method) is read


@pytest.mark.parametrize(("query", "kept", "token"), [
    ("", "", None), ("a=1", "a=1", None), ("token=abc", "", b"abc"),
    ("a=1&token=abc&b=2", "a=1&b=2", b"abc"), ("tok%65n=abc", "", b"abc"),
    ("token=a%2Bb", "", b"a+b"), ("token=1&token=2", "", None),  # twice: none counts
    ("token=%ff", "", None), ("tokens=x", "tokens=x", None),
])
def test_the_query_token_is_taken_out(query, kept, token) -> None:
    assert take_query_token(query) == (kept, token)


# ---- config ----------------------------------------------------------------------------

def parse(tmp_path: Path, **top: Any) -> manager_config.ManagerConfig:
    return manager_config.parse({"state_dir": str(tmp_path / "state"), **top,
                                 "services": [{"name": "svc", "command": ["true"]}]})


def test_auth_tokens_config(tmp_path) -> None:
    cfg = parse(tmp_path, auth_token_file="/etc/ai/admin.token", auth_tokens=[
        {"name": "viewer", "file": "/etc/ai/viewer.token", "role": "read"},
        {"name": "ci.deploy@x", "file": "/etc/ai/ci.token", "role": "admin"},
        {"name": "dash", "file": "/etc/ai/dash.token"}])
    assert cfg.auth_tokens == (TokenSpec("viewer", Path("/etc/ai/viewer.token"), Role.READ),
                               TokenSpec("ci.deploy@x", Path("/etc/ai/ci.token"), Role.ADMIN),
                               TokenSpec("dash", Path("/etc/ai/dash.token"), Role.READ))
    assert parse(tmp_path).auth_tokens == ()
    # any named token lets a manager listen beyond loopback
    exposed = parse(tmp_path, http_listen="0.0.0.0:3081",
                    auth_tokens=[{"name": "ops", "file": "/x", "role": "admin"}])
    assert exposed.auth_token_file is None
    with pytest.raises(ConfigError, match=r"auth_token_file: required .*auth_tokens"):
        parse(tmp_path, http_listen="0.0.0.0:3081")


@pytest.mark.parametrize(("top", "message"), [
    ({"auth_tokens": {"name": "x"}}, r"auth_tokens: must be an array of tables"),
    ({"auth_tokens": [{"file": "/x"}]}, r"auth_tokens\[0\].name: required"),
    ({"auth_tokens": [{"name": "x"}]}, r"auth_tokens\[0\].file: required"),
    ({"auth_tokens": [{"name": "x", "file": "rel/path"}]},
     r"auth_tokens\[0\].file: must be an absolute path"),
    ({"auth_tokens": [{"name": "x", "file": ""}]}, r"auth_tokens\[0\].file: must be a file"),
    ({"auth_tokens": [{"name": "x", "file": "/x", "role": "root"}]},
     r"auth_tokens\[0\].role: must be one of admin, read"),
    ({"auth_tokens": [{"name": "x", "file": "/x", "role": 1}]},
     r"auth_tokens\[0\].role: must be a string"),
    ({"auth_tokens": [{"name": "x", "file": "/x", "colour": "red"}]},
     r"auth_tokens\[0\].colour: unknown key"),
    ({"auth_tokens": [{"name": "bad name", "file": "/x"}]}, r"auth_tokens\[0\].name: must be"),
    ({"auth_tokens": [{"name": "x" * 65, "file": "/x"}]}, r"auth_tokens\[0\].name: must be"),
    ({"auth_tokens": [{"name": "../x", "file": "/x"}]}, r"auth_tokens\[0\].name: must be"),
    ({"auth_tokens": [{"name": 7, "file": "/x"}]}, r"auth_tokens\[0\].name: must be"),
    ({"auth_tokens": [{"name": "anonymous", "file": "/x"}]},
     r"auth_tokens\[0\].name: 'anonymous' names callers without a token"),
    ({"auth_tokens": [{"name": "a", "file": "/x"}, {"name": "a", "file": "/y"}]},
     r"auth_tokens\[1\].name: duplicate token name 'a'"),
    ({"auth_token_file": "/t", "auth_tokens": [{"name": "default", "file": "/x"}]},
     r"auth_tokens\[0\].name: duplicate token name 'default' \(auth_token_file's"),
    ({"auth_tokens": [{"name": f"t{i}", "file": "/x"} for i in range(65)]},
     r"auth_tokens: at most 64"),
])
def test_bad_auth_tokens_name_the_key(tmp_path, top, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, **top)


def test_a_token_named_default_is_fine_without_auth_token_file(tmp_path) -> None:
    cfg = parse(tmp_path, auth_tokens=[{"name": "default", "file": "/x", "role": "admin"}])
    assert cfg.auth_tokens[0].name == "default"


# ---- HTTP ------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.seen: list[Identity] = []
        self.router = r = Router()
        r.add("GET", "/look", self.record, query=("x",))
        r.add("POST", "/act", self.record)
        r.add("GET", "/open", self.record, auth=open_access)
        r.add("POST", "/open", self.record, auth=open_access)

    async def record(self, req: Request) -> dict[str, Any]:
        self.seen.append(req.caller.identity)
        return {"name": req.caller.identity.name, "query": req.query}


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None,
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


async def test_http_roles_query_tokens_and_no_token_in_logs() -> None:
    app = Recorder()
    server = HttpServer(ListenAddress("127.0.0.1", 0), app.router, token=two_tokens())
    _, port = await server.start()

    def go(method: str, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
        return call(port, method, path, {"Authorization": f"Bearer {token}"} if token else {})

    try:
        with capture_logs() as logs:
            got = await asyncio.to_thread(lambda: {
                "admin look": go("GET", "/look", ADMIN),
                "admin act": go("POST", "/act", ADMIN),
                "viewer look": go("GET", "/look?x=1", VIEWER),
                "viewer act": go("POST", "/act", VIEWER),
                "query look": go("GET", f"/look?x=2&token={VIEWER}"),
                "query head": call(port, "GET", f"/look?token={ADMIN}",
                                   {"Authorization": "Bearer wrong"}),
                "query act": go("POST", f"/act?token={ADMIN}"),
                "nobody": go("GET", "/look"),
                "wrong": go("GET", "/look", "wrong"),
                "unknown path": go("GET", f"/nope?token={VIEWER}"),
                "viewer open act": go("POST", "/open", VIEWER),
                "nobody open act": go("POST", "/open"),
            })
    finally:
        await server.stop(1.0)
    assert got["admin look"] == (200, {"name": "default", "query": {}})
    assert got["admin act"] == (200, {"name": "default", "query": {}})
    assert got["viewer look"] == (200, {"name": "viewer", "query": {"x": "1"}})
    assert got["viewer act"] == (403, {"success": False, "error": "token 'viewer' is "
                                       "read-only: POST /act needs an admin token"})
    assert got["query look"] == (200, {"name": "viewer", "query": {"x": "2"}})
    # a header that is there wins, even a wrong one
    assert got["query head"][0] == 401
    # a token in the query counts on GET only (it would end up in proxies' logs)
    assert got["query act"] == (401, {"success": False, "error": "missing or invalid bearer "
                                      "token (a token in the query counts on GET only: "
                                      "send Authorization: Bearer TOKEN)"})
    assert got["nobody"][0] == got["wrong"][0] == 401
    assert got["unknown path"] == (404, {"success": False, "error": "no endpoint '/nope'"})
    assert got["viewer open act"][0] == 403
    assert got["nobody open act"] == (200, {"name": "anonymous", "query": {}})
    assert [i.transport for i in app.seen] == ["http"] * len(app.seen)
    assert all(i.peer.startswith("127.0.0.1:") for i in app.seen)
    text = repr(logs)
    assert ADMIN not in text and VIEWER not in text


# ---- gRPC ------------------------------------------------------------------------------

def who_service(aio: bool) -> tuple[str, Any]:
    """A tiny service whose methods answer with grpc_identity(context) as JSON."""

    def answer(context: Any) -> bytes:
        ident = grpc_identity(context)
        return json.dumps({"name": ident.name, "role": ident.role.value if ident.role else None,
                           "transport": ident.transport, "tls": ident.tls_subject,
                           "peer": ident.peer}).encode()

    if aio:
        async def status_aio(request: bytes, context: Any) -> bytes:
            return answer(context)

        async def start_aio(request: bytes, context: Any) -> bytes:
            return answer(context)
        status, start = status_aio, start_aio
    else:
        def status_sync(request: bytes, context: Any) -> bytes:
            return answer(context)

        def start_sync(request: bytes, context: Any) -> bytes:
            return answer(context)
        status, start = status_sync, start_sync
    handler = grpc.method_handlers_generic_handler("test.Who", {
        "Status": grpc.unary_unary_rpc_method_handler(status),
        "Start": grpc.unary_unary_rpc_method_handler(start)})
    return "test.Who", lambda server: server.add_generic_rpc_handlers((handler,))


@pytest.mark.parametrize("flavour", ["threads", "aio"])
@pytest.mark.parametrize("tls", [False, True])
async def test_grpc_roles_and_identity(flavour, tls, tmp_path_factory) -> None:
    certs = make_certs(tmp_path_factory.mktemp("certs")) if tls else None
    credentials = ServerTLS(*(read_pem(certs / f, f) for f in ("server.pem", "server.key",
                                                              "ca.pem"))).credentials() \
        if certs else None
    server = GrpcServer(ListenAddress("127.0.0.1", 0), token=two_tokens(),
                        services=[who_service(flavour == "aio")], credentials=credentials,
                        threads=4 if flavour == "threads" else 0)
    _, port = await server.start()

    def calls() -> dict[str, Any]:
        if certs:
            creds = grpc.ssl_channel_credentials(
                (certs / "ca.pem").read_bytes(), (certs / "client.key").read_bytes(),
                (certs / "client.pem").read_bytes())
            channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
        else:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        out: dict[str, Any] = {}
        with channel:
            for method in ("Status", "Start"):
                stub = channel.unary_unary(f"/test.Who/{method}")
                for who, token in (("admin", ADMIN), ("viewer", VIEWER), ("nobody", None),
                                   ("wrong", "wrong")):
                    md = [("authorization", f"Bearer {token}")] if token else []
                    try:
                        out[f"{who} {method}"] = json.loads(stub(b"", timeout=10, metadata=md))
                    except grpc.RpcError as exc:
                        out[f"{who} {method}"] = (exc.code(), exc.details())
        return out

    try:
        got = await asyncio.to_thread(calls)
    finally:
        await server.stop(0.5)
    subject = "CN=client" if tls else ""
    for method in ("Status", "Start"):
        admin = got[f"admin {method}"]
        assert (admin["name"], admin["role"], admin["transport"], admin["tls"]) == (
            "default", "admin", "grpc", subject)
        assert admin["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
        for who in ("nobody", "wrong"):
            assert got[f"{who} {method}"] == (grpc.StatusCode.UNAUTHENTICATED,
                                              "missing or invalid bearer token")
    assert got["viewer Status"]["name"] == "viewer" and got["viewer Status"]["role"] == "read"
    assert got["viewer Start"] == (grpc.StatusCode.PERMISSION_DENIED,
                                   "token 'viewer' is read-only: Start needs an admin token")


async def test_grpc_without_tokens_everyone_is_the_anonymous_admin() -> None:
    server = GrpcServer(ListenAddress("127.0.0.1", 0), token=None,
                        services=[who_service(False)], threads=2)
    _, port = await server.start()

    def call_start() -> Any:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return json.loads(channel.unary_unary("/test.Who/Start")(b"", timeout=10))
    try:
        got = await asyncio.to_thread(call_start)
    finally:
        await server.stop(0.5)
    assert (got["name"], got["role"], got["transport"]) == ("anonymous", "admin", "grpc")


# ---- a real manager --------------------------------------------------------------------

def test_manager_with_named_tokens_read_only_looks_and_sighup_rereads_all(
        make_manager, tmp_path) -> None:
    files = token_files(tmp_path, admin=ADMIN, viewer=VIEWER)
    m = make_manager([fast_service("svc", "--interval", "0.2")], top={
        "auth_token_file": str(files["admin"]),
        "auth_tokens": [{"name": "viewer", "file": str(files["viewer"]), "role": "read"}]})
    m.start()
    stub = m.stub()

    def grpc_call(method: str, token: str, request: Any) -> grpc.StatusCode:
        try:
            getattr(stub, method)(request, timeout=20,
                                  metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    m.token = ADMIN
    pid = m.status().pid
    assert grpc_call("Status", VIEWER, pb.StatusRequest()) == grpc.StatusCode.OK
    assert grpc_call("Version", VIEWER, pb.VersionRequest()) == grpc.StatusCode.OK
    assert grpc_call("Restart", VIEWER, pb.RestartRequest()) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call("Stop", VIEWER, pb.StopRequest()) == grpc.StatusCode.PERMISSION_DENIED
    watch = stub.WatchStatus(pb.WatchStatusRequest(), timeout=20,
                             metadata=[("authorization", f"Bearer {VIEWER}")])
    assert next(watch).pid == pid
    watch.cancel()
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert m.http("GET", "/status", headers=viewer)[0] == 200
    code, body = m.http("POST", "/restart", headers=viewer)
    assert (code, json.loads(body)["error"]) == (
        403, "token 'viewer' is read-only: POST /restart needs an admin token")
    code, _ = m.http("POST", "/api/services/svc/stop", headers=viewer)
    assert code == 403
    assert m.status().pid == pid  # nothing changed
    # SIGHUP re-reads every token file: the viewer's too
    write_token(files["viewer"], "viewer-rotated")
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    assert_eventually(lambda: grpc_call("Status", "viewer-rotated", pb.StatusRequest())
                      == grpc.StatusCode.OK, 10)
    assert grpc_call("Status", VIEWER, pb.StatusRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_call("Stop", "viewer-rotated", pb.StopRequest()) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call("Status", ADMIN, pb.StatusRequest()) == grpc.StatusCode.OK
    assert VIEWER not in m.logs() and ADMIN not in m.logs()


def test_manager_refuses_to_start_with_an_unreadable_named_token(make_manager, tmp_path):
    m = make_manager([fast_service("svc")], top={
        "auth_tokens": [{"name": "viewer", "file": str(tmp_path / "missing.token")}]})
    with pytest.raises(AssertionError, match=r"auth_tokens\[0\].file: cannot read"):
        m.start()
