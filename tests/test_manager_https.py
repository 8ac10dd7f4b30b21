"""HTTPS on the manager's HTTP API (issue 11, item 10): `http_tls = true` serves the seeds'
JSON API over TLS with the `[tls]` certificate, mutual TLS with its client_ca_file; curl
and http.client against a real manager; a plaintext client on the HTTPS port fails
cleanly (and the port keeps serving); SIGHUP swaps the certificate for new connections."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest

from backendai.auth import write_token
from backendai.errors import ConfigError
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
