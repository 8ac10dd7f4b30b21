"""HTTPS on the manager's HTTP API (issue 11, item 10): `http_tls = true` serves the seeds'
JSON API over TLS with the `[tls]` certificate, mutual TLS with its client_ca_file; curl
and http.client against a real manager; a plaintext client on the HTTPS port fails
cleanly (and the port keeps serving); SIGHUP swaps the certificate for new connections.
The audit trail names a client certificate's subject the same over HTTPS and gRPC."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backendai.auth import certificate_subject, grpc_identity, write_token
from backendai.errors import ConfigError
from backendai.v1 import events_pb2 as epb
from backendai.v1 import manager_pb2 as pb
from manager import config
from tests.conftest import PY, ROOT, assert_eventually, fast_service, to_toml
from tests.fixtures.hub_procs import make_certs

TOKEN = "manager-secret"
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_table(c: Path, *, mutual: bool) -> dict[str, str]:
    table = {"cert_file": str(c / "server.pem"), "key_file": str(c / "server.key")}
    if mutual:
        table["client_ca_file"] = str(c / "ca.pem")
    return table


def start_manager(make_manager, tmp_path: Path, tls: dict[str, str]):
    write_token(tmp_path / "manager.token", TOKEN)
    m = make_manager([fast_service("svc")], top={
        "auth_token_file": str(tmp_path / "manager.token"), "tls": tls, "http_tls": True})
    m.token = TOKEN
    m.start()
    assert m.info["http_scheme"] == "https"
    return m


def client_context(c: Path, *, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(c / "ca.pem"))
    if cert:
        ctx.load_cert_chain(c / "client.pem", c / "client.key")
    return ctx


def https(m, ctx: ssl.SSLContext, method: str = "GET", path: str = "/status",
          token: str | None = TOKEN) -> tuple[int, dict]:
    conn = http.client.HTTPSConnection("127.0.0.1", m.http_port, context=ctx, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _plaintext_status(m) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", m.http_port, timeout=10)
    try:
        conn.request("GET", "/status", headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse().read()
    finally:
        conn.close()


def plaintext_fails(m) -> None:
    """A plaintext client on the HTTPS port: the connection is closed, no answer."""
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        _plaintext_status(m)


def curl(m, c: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--cacert", str(c / "ca.pem"), "-H",
         f"Authorization: Bearer {TOKEN}", *extra,
         f"https://127.0.0.1:{m.http_port}/status"],
        capture_output=True, text=True, timeout=30, check=False)


def test_https_with_curl_and_http_client(make_manager, tmp_path, certs):
    m = start_manager(make_manager, tmp_path, tls_table(certs, mutual=False))
    code, body = https(m, client_context(certs, cert=False))
    assert code == 200 and body["running"] is True and body["service"] == "svc"
    code, body = https(m, client_context(certs, cert=False), token=None)
    assert code == 401  # TLS does not replace the token
    code, body = https(m, client_context(certs, cert=False), "POST", "/restart")
    assert code == 200 and body == {"success": True}
    if CURL:
        out = curl(m, certs)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["running"] is True
    # a client that does not trust the certificate refuses it
    with pytest.raises(ssl.SSLCertVerificationError):
        https(m, ssl.create_default_context())
    # plaintext on the HTTPS port fails cleanly, and the port keeps serving HTTPS
    plaintext_fails(m)
    assert https(m, client_context(certs, cert=False))[0] == 200
    # gRPC keeps its TLS on its own port
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
    m.credentials = creds
    assert m.status().state == pb.SERVICE_STATE_RUNNING
    assert "Traceback" not in m.logs()


def test_mutual_tls_wants_a_client_certificate(make_manager, tmp_path, certs):
    m = start_manager(make_manager, tmp_path, tls_table(certs, mutual=True))
    code, body = https(m, client_context(certs, cert=True))
    assert code == 200 and body["running"] is True
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https(m, client_context(certs, cert=False))
    if CURL:
        out = curl(m, certs, "--cert", str(certs / "client.pem"), "--key",
                   str(certs / "client.key"))
        assert out.returncode == 0 and json.loads(out.stdout)["running"] is True, out.stderr
        assert curl(m, certs).returncode != 0
    plaintext_fails(m)
    assert https(m, client_context(certs, cert=True))[0] == 200
    assert "Traceback" not in m.logs()


def test_sighup_swaps_the_https_certificate(make_manager, tmp_path, certs,
                                            tmp_path_factory):
    """The configured files are replaced by a certificate from another CA and the
    manager reloaded: new HTTPS connections get the new certificate."""
    live = tmp_path / "tls"
    live.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy2(certs / name, live / name)
    m = start_manager(make_manager, tmp_path, tls_table(live, mutual=False))
    assert https(m, client_context(certs, cert=False))[0] == 200
    other = make_certs(tmp_path_factory.mktemp("other-ca"))
    for name in ("server.pem", "server.key"):
        shutil.copy2(other / name, live / name)
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    assert_eventually(lambda: "daemon.reloaded" in m.logs(), 20, what="reloaded")
    assert https(m, client_context(other, cert=False))[0] == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        https(m, client_context(certs, cert=False))


@pytest.mark.parametrize(("top", "message"), [
    ({"http_tls": True}, "http_tls: needs [tls]"),
    ({"http_tls": "yes"}, "http_tls"),
    ({"http_tls": 1}, "http_tls"),
    ({"http_tls": [True]}, "http_tls"),
])
def test_bad_http_tls_config_names_the_key(tmp_path, top, message):
    data = {"state_dir": str(tmp_path / "s"), "services": [{"name": "s", "command": ["x"]}],
            **top}
    with pytest.raises(ConfigError, match="http_tls"):
        config.parse(data)
    path = tmp_path / "m.toml"
    path.write_text(to_toml({"state_dir": str(tmp_path / "s"), **top},
                            [{"name": "s", "command": ["x"]}]))
    out = subprocess.run([PY, "-m", "manager.main", "--config", str(path), "--check-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert out.returncode == 2 and message in out.stderr


# ---- who the audit trail names (issue 13: the client certificate's subject) -------------

# Several attributes and RFC 2253's special characters: the subject must come out the
# same over HTTPS (Python's ssl) and gRPC (OpenSSL's x509_subject), last attribute first.
ALICE = "/C=KR/O=Ops, Inc./OU=on-call #1/CN=alice <admin>"
ALICE_RFC2253 = "CN=alice \\<admin\\>,OU=on-call #1,O=Ops\\, Inc.,C=KR"


def client_certificate(c: Path, name: str, subject: str) -> Path:
    """Another client certificate from make_certs' CA, with the given subject."""

    def ssl_(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=c, check=True, capture_output=True,
                       timeout=60)

    ssl_("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
         f"{name}.csr", "-subj", subject, "-utf8")
    ssl_("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "client.ext")
    (c / f"{name}.key").chmod(0o600)
    return c


def as_alice(c: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(c / "ca.pem"))
    ctx.load_cert_chain(c / "alice.pem", c / "alice.key")
    return ctx


def alice_grpc(c: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(c / "ca.pem").read_bytes(),
        private_key=(c / "alice.key").read_bytes(),
        certificate_chain=(c / "alice.pem").read_bytes())


def audit_stops(m) -> list[epb.Event]:
    return list(m.stub().ListEvents(epb.ListEventsRequest(kind="audit.stop", limit=100),
                                    timeout=10, metadata=m.metadata()).events)


def test_the_audit_names_the_client_certificate_over_https_and_grpc(
        make_manager, tmp_path, certs):
    """docs/EVENTS.md: the actor is the token's name, else the client certificate's
    subject; with both, the subject is in the fields as `cert_subject`."""
    client_certificate(certs, "alice", ALICE)
    # mutual TLS on both ports and no token: the certificate is who asked
    m = make_manager([fast_service("web"), fast_service("db")], top={
        "tls": tls_table(certs, mutual=True), "http_tls": True}, name="certs-only")
    m.start()
    m.credentials = alice_grpc(certs)
    code, body = https(m, as_alice(certs), "POST", "/stop?service=web", token=None)
    assert code == 200, body
    m.stub().Stop(pb.StopRequest(service="db"), timeout=30)
    stops = audit_stops(m)
    assert [(e.subject, e.actor, e.transport, e.result) for e in stops] == [
        ("service/web", ALICE_RFC2253, "http", "ok"),
        ("service/db", ALICE_RFC2253, "grpc", "ok")]
    assert all("cert_subject" not in e.fields for e in stops)  # already the actor
    assert stops[0].message.startswith(f"{ALICE_RFC2253} asked to stop service/web over http")
    # the same certificate with a token: the token names the caller, the subject is kept
    write_token(tmp_path / "manager.token", TOKEN)
    t = make_manager([fast_service("web"), fast_service("db")], top={
        "tls": tls_table(certs, mutual=True), "http_tls": True,
        "auth_token_file": str(tmp_path / "manager.token")}, name="certs-and-token")
    t.token = TOKEN
    t.start()
    t.credentials = alice_grpc(certs)
    code, body = https(t, as_alice(certs), "POST", "/stop?service=web")
    assert code == 200, body
    t.stub().Stop(pb.StopRequest(service="db"), timeout=30, metadata=t.metadata())
    stops = audit_stops(t)
    assert [(e.subject, e.actor, e.transport, e.fields["cert_subject"]) for e in stops] == [
        ("service/web", "default", "http", ALICE_RFC2253),
        ("service/db", "default", "grpc", ALICE_RFC2253)]
    # without a token the certificate is not enough there
    assert https(t, as_alice(certs), "POST", "/stop?service=db", token=None)[0] == 401


def grpc_subject(c: Path, name: str) -> str:
    """The subject a real gRPC server sees (its `x509_subject`, what grpc_identity reads)
    for the client certificate `name`."""
    seen: list[str] = []

    class Health(health_pb2_grpc.HealthServicer):
        def Check(self, request, context):
            seen.append(grpc_identity(context).tls_subject)
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.server(futures.ThreadPoolExecutor(1))
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [((c / "server.key").read_bytes(), (c / "server.pem").read_bytes())],
        root_certificates=(c / "ca.pem").read_bytes(), require_client_auth=True))
    server.start()
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(
                (c / "ca.pem").read_bytes(), (c / f"{name}.key").read_bytes(),
                (c / f"{name}.pem").read_bytes())) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=10)
    finally:
        server.stop(None)
    return seen[0]


def https_subject(c: Path, name: str) -> str:
    """The subject the HTTP server names (certificate_subject of what Python's ssl
    verified) for the client certificate `name`, over a real TLS handshake."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(c / "server.pem", c / "server.key")
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(c / "ca.pem")
    client = ssl.create_default_context(cafile=str(c / "ca.pem"))
    client.load_cert_chain(c / f"{name}.pem", c / f"{name}.key")
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            sock, _ = listener.accept()
            with server.wrap_socket(sock, server_side=True) as tls:
                seen.append(certificate_subject(tls.getpeercert()))
                tls.sendall(b"x")

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.recv(1)
        thread.join(10)
    return seen[0]


@pytest.mark.parametrize("subject", [
    "/CN=client", ALICE, "/DC=org/DC=example/O=\u00c9t\u00e9 caf\u00e9/CN=bob+UID=42",
    "/CN= lead and trail /L=tab\there", "/CN=#hash;semi\"quote\\back+plus=eq",
])
def test_the_https_subject_is_written_as_grpc_writes_it(certs, tmp_path, subject):
    """The same certificate is named by the same string over HTTPS and gRPC."""
    c = tmp_path / "c"
    shutil.copytree(certs, c)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "s.key",
                    "-out", "s.csr", "-subj", subject, "-utf8", "-multivalue-rdn"],
                   cwd=c, check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey",
                    "ca.key", "-CAcreateserial", "-out", "s.pem", "-days", "2", "-extfile",
                    "client.ext"], cwd=c, check=True, capture_output=True, timeout=60)
    (c / "s.key").chmod(0o600)
    from_grpc = grpc_subject(c, "s")
    assert from_grpc and https_subject(c, "s") == from_grpc
