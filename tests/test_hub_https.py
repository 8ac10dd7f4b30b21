"""HTTPS on the hub's HTTP listener (`http_tls = true`): the dashboard, the /api JSON, the
WebSockets and /metrics over TLS with the hub's `[tls]` certificate, mutual TLS with its
client_ca_file; curl, http.client and a wss client against a real ai-hub process and
simulated managers (FAKE managers: tests/fixtures/sim_manager.py says why). A plaintext
client on the HTTPS port fails cleanly (the port keeps serving); SIGHUP serves a new
certificate to new connections and leaves open ones alone; a bad file at SIGHUP keeps
the old one. The audit names a client certificate's subject. The manager's
counterpart: tests/test_manager_https.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import shutil
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from backendai.errors import ConfigError
from backendai.v1 import hub_pb2 as hpb
from backendai.v1 import hub_pb2_grpc as hpb_grpc
from hub import config as hub_config
from tests.conftest import PY, ROOT, assert_eventually
from tests.fixtures.components import chromium, wait_until
from tests.fixtures.hub_procs import HubProc, SimManagers, make_certs, wait_for
from tests.test_check_config import base, refusal

TOKEN = "hub-https-token-1"
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another CA, and a server certificate from it (a rotation, or the wrong CA)."""
    return make_certs(tmp_path_factory.mktemp("other-ca"))


def tls_table(c: Path, *, mutual: bool = False) -> dict[str, str]:
    table = {"cert_file": str(c / "server.pem"), "key_file": str(c / "server.key")}
    if mutual:
        table["client_ca_file"] = str(c / "ca.pem")
    return table


def https_hub(procs, hosts: dict[str, str], tls: dict[str, str], *,
              token: str | None = TOKEN, name: str = "hub") -> HubProc:
    hub = procs(HubProc, hosts, token=token, name=name,
                extra={"tls": tls, "http_tls": True}).start()
    assert hub.info["http_scheme"] == "https"
    return hub


def client_context(c: Path, *, cert: str = "") -> ssl.SSLContext:
    """Trusts `c`'s CA; `cert`: present that client certificate (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=str(c / "ca.pem"))
    if cert:
        ctx.load_cert_chain(c / f"{cert}.pem", c / f"{cert}.key")
    return ctx


def request(conn: http.client.HTTPConnection, method: str = "GET", path: str = "/api/hosts",
            body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw


def https(hub: HubProc, ctx: ssl.SSLContext, method: str = "GET", path: str = "/api/hosts",
          body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", hub.info["http_port"], context=ctx,
                                       timeout=10)
    try:
        return request(conn, method, path, body, token)
    finally:
        conn.close()


def served_fingerprint(hub: HubProc, ctx: ssl.SSLContext) -> str:
    """SHA-256 of the certificate a new HTTPS connection is served."""
    conn = http.client.HTTPSConnection("127.0.0.1", hub.info["http_port"], context=ctx,
                                       timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
    finally:
        conn.close()
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def fingerprint(c: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert((c / "server.pem").read_text())).hexdigest()


def plaintext_fails(hub: HubProc) -> None:
    """A plaintext client on the HTTPS port: the connection is closed, no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.info["http_port"], timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            request(conn)
    finally:
        conn.close()


def curl(hub: HubProc, ca: Path, *extra: str, path: str = "/api/hosts",
         ) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--cacert", str(ca / "ca.pem"), "-H",
         f"Authorization: Bearer {TOKEN}", *extra,
         f"https://127.0.0.1:{hub.info['http_port']}{path}"],
        capture_output=True, text=True, timeout=30, check=False)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """/api/hosts without what differs between two hubs watching the same managers (the
    time each last heard from a host, and the time each answered)."""
    return {**{k: v for k, v in doc.items() if k != "server_time"},
            "hosts": [{k: v for k, v in h.items() if k != "last_seen"} for h in doc["hosts"]]}


def test_https_with_curl_the_same_json_as_http(procs, certs, other):
    sim = procs(SimManagers, hosts=3).start()
    plain = procs(HubProc, sim.hosts, token=TOKEN, name="plain").start()
    assert plain.info["http_scheme"] == "http"
    hub = https_hub(procs, sim.hosts, tls_table(certs))
    # GetInfo says how to reach the HTTP listener it names
    assert plain.call("GetInfo", hpb.HubInfoRequest()).http_scheme == "http"
    with grpc.secure_channel(hub.address, grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes())) as channel:
        info = hpb_grpc.HubStub(channel).GetInfo(hpb.HubInfoRequest(), timeout=10,
                                                 metadata=hub.metadata())
    assert (info.http_scheme, info.http_address) == ("https", hub.info["http"])
    wait_for(lambda: https(hub, client_context(certs), path="/api/info")[1]["reachable"] == 3,
             20, "every host reachable over https")
    wait_for(lambda: plain.http("GET", "/api/info")[1]["reachable"] == 3, 20)
    code, over_http = plain.http("GET", "/api/hosts")
    assert code == 200
    assert CURL, "curl is needed"
    out = curl(hub, certs)
    assert out.returncode == 0, out.stderr
    assert comparable(json.loads(out.stdout)) == comparable(over_http)
    assert [h["name"] for h in over_http["hosts"]] == sorted(sim.hosts)
    # the token is still needed; the dashboard page and /metrics are there too
    assert https(hub, client_context(certs), token=None)[0] == 401
    code, page = https(hub, client_context(certs), path="/ui/", token=None)
    assert code == 200 and b"<html" in page.lower()
    code, metrics = https(hub, client_context(certs), path="/metrics")
    assert code == 200 and b"backendai_hub_" in metrics
    # a client that trusts another CA refuses the certificate
    wrong = curl(hub, other)
    assert wrong.returncode != 0 and not wrong.stdout
    with pytest.raises(ssl.SSLCertVerificationError):
        https(hub, client_context(other))
    # plaintext on the HTTPS port fails cleanly, and the port keeps serving HTTPS
    plaintext_fails(hub)
    assert https(hub, client_context(certs))[0] == 200
    assert "Traceback" not in hub.logs()


def test_mutual_tls_wants_a_client_certificate(procs, certs):
    sim = procs(SimManagers, hosts=2).start()
    hub = https_hub(procs, sim.hosts, tls_table(certs, mutual=True))
    code, doc = https(hub, client_context(certs, cert="client"))
    assert code == 200 and doc["total"] == 2
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https(hub, client_context(certs))
    assert CURL, "curl is needed"
    out = curl(hub, certs, "--cert", str(certs / "client.pem"), "--key",
               str(certs / "client.key"))
    assert out.returncode == 0 and json.loads(out.stdout)["total"] == 2, out.stderr
    assert curl(hub, certs).returncode != 0
    plaintext_fails(hub)
    assert https(hub, client_context(certs, cert="client"))[0] == 200
    assert "Traceback" not in hub.logs()


def audits(hub: HubProc, ctx: ssl.SSLContext, token: str | None) -> list[dict[str, Any]]:
    code, body = https(hub, ctx, path="/api/events?kind=audit.rollout.start&order=oldest",
                       token=token)
    assert code == 200, body
    return list(body["events"])


def test_the_audit_names_the_client_certificate(procs, certs):
    """Without a token the certificate's subject is who asked; with a token, the token's
    name, and the subject in the fields as `cert_subject` (as on the manager)."""
    sim = procs(SimManagers, hosts=2, delay=0.05).start()
    ctx = client_context(certs, cert="client")
    bare = https_hub(procs, sim.hosts, tls_table(certs, mutual=True), token=None,
                     name="certs-only")
    code, body = https(bare, ctx, "POST", "/api/rollouts", {"version": "2.0"}, token=None)
    assert code == 200, body
    (start,) = audits(bare, ctx, None)
    assert (start["actor"], start["transport"], start["result"]) == ("CN=client", "http", "ok")
    assert "cert_subject" not in start["fields"]
    assert start["message"].startswith("CN=client asked to rollout.start")
    tokened = https_hub(procs, sim.hosts, tls_table(certs, mutual=True),
                        name="certs-and-token")
    code, body = https(tokened, ctx, "POST", "/api/rollouts", {"version": "2.0"})
    assert code == 200, body
    (start,) = audits(tokened, ctx, TOKEN)
    assert (start["actor"], start["transport"], start["fields"]["cert_subject"]) == (
        "default", "http", "CN=client")
    # the certificate alone is not enough where a token is configured
    assert https(tokened, ctx, "POST", "/api/rollouts", {"version": "2.0"}, token=None)[0] \
        == 401


async def test_fleet_websocket_over_wss(procs, certs):
    sim = procs(SimManagers, hosts=3).start()
    hub = https_hub(procs, sim.hosts, tls_table(certs, mutual=True))
    ctx = client_context(certs, cert="client")
    url = f"wss://127.0.0.1:{hub.info['http_port']}/api/fleet/ws?token={TOKEN}"
    async with connect(url, ssl=ctx, open_timeout=10) as ws:
        snap = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert snap["type"] == "snapshot"
    assert [h["name"] for h in snap["hosts"]] == sorted(sim.hosts)
    # without the client certificate there is no socket at all (TLS 1.3: the client
    # hears of the refusal after its side of the handshake, as a lost connection)
    with pytest.raises((ssl.SSLError, OSError, InvalidHandshake)):
        async with connect(url, ssl=client_context(certs), open_timeout=10) as ws:
            await asyncio.wait_for(ws.recv(), 10)


def test_sighup_serves_the_new_certificate_to_new_connections(procs, tmp_path, certs, other):
    """The configured files are replaced by another CA's certificate and the hub reloaded:
    new connections get it, an open keep-alive connection keeps the old one; then a bad
    file at SIGHUP is refused and the certificate in use keeps serving."""
    live = tmp_path / "tls"
    live.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy2(certs / name, live / name)
    hub = https_hub(procs, {}, tls_table(live))
    old_ctx, new_ctx = client_context(certs), client_context(other)
    assert served_fingerprint(hub, old_ctx) == fingerprint(certs)
    kept = http.client.HTTPSConnection("127.0.0.1", hub.info["http_port"], context=old_ctx,
                                       timeout=10)
    try:
        assert request(kept, path="/api/info")[0] == 200
        for name in ("server.pem", "server.key"):
            shutil.copy2(other / name, live / name)
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGHUP)
        assert_eventually(lambda: "daemon.reloaded" in hub.logs(), 20, what="reloaded")
        assert served_fingerprint(hub, new_ctx) == fingerprint(other)
        assert https(hub, new_ctx)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            https(hub, old_ctx)
        # the connection opened before the reload is not cut, and keeps its certificate
        assert request(kept, path="/api/info")[0] == 200
        assert kept.sock is not None
        assert hashlib.sha256(kept.sock.getpeercert(binary_form=True) or b"").hexdigest() \
            == fingerprint(certs)
    finally:
        kept.close()
    # a bad certificate file at SIGHUP: logged, the one in use keeps serving
    (live / "server.pem").write_text("not a certificate\n")
    hub.proc.send_signal(signal.SIGHUP)
    assert_eventually(lambda: "daemon.reload_failed" in hub.logs(), 20, what="refused")
    assert "tls.cert_file" in next(line for line in hub.logs().splitlines()
                                   if "daemon.reload_failed" in line)
    assert served_fingerprint(hub, new_ctx) == fingerprint(other)
    assert https(hub, new_ctx)[0] == 200
    assert hub.proc.poll() is None and "Traceback" not in hub.logs()


@pytest.mark.parametrize(("top", "message"), [
    ({"http_tls": True}, "http_tls: needs [tls]"),
    ({"http_tls": "yes"}, "http_tls: must be true or false"),
    ({"http_tls": 1}, "http_tls: must be true or false"),
    ({"http_tls": [True]}, "http_tls: must be true or false"),
])
def test_bad_http_tls_config_names_the_key(tmp_path, top, message):
    """The start and --check-config refuse it with the same words, naming the key."""
    said = refusal(tmp_path, "hub", {**base("hub", tmp_path), **top})
    assert message in said
    path = tmp_path / "hub.toml"
    path.write_text(tomli_w.dumps({**base("hub", tmp_path), **top}))
    with pytest.raises(ConfigError, match="http_tls"):
        hub_config.load(path)


def test_http_tls_defaults_off_and_the_ready_file_says_http(procs, tmp_path, certs):
    """`[tls]` alone keeps the HTTP listener plain (gRPC serves TLS); the ready file says
    which scheme the listener speaks."""
    path = tmp_path / "plain.toml"
    path.write_text(tomli_w.dumps({**base("hub", tmp_path), "tls": tls_table(certs)}))
    assert hub_config.load(path).http_tls is False
    hub = procs(HubProc, {}, token=TOKEN, extra={"tls": tls_table(certs)}).start()
    assert hub.info["http_scheme"] == "http"
    assert hub.http("GET", "/api/info")[0] == 200
    out = subprocess.run([PY, "-m", "hub.main", "--config", str(hub.config_path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def spki_pin(c: Path) -> str:
    """base64(SHA-256(the certificate's public key)): what Chromium's
    --ignore-certificate-errors-spki-list trusts (this certificate and no other)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(c / "server.pem"), "-pubkey",
                          "-noout"], capture_output=True, check=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.slow
def test_the_dashboard_in_a_browser_over_https_goes_live_over_wss(procs, certs):
    """The page at https://.../ui/ (headless Chromium trusting the test certificate):
    its fleet socket is built from the page's own URL, so it connects over wss and the
    table goes live; the hub's log shows no plaintext attempt."""
    sim = procs(SimManagers, hosts=3).start()
    hub = https_hub(procs, sim.hosts, tls_table(certs))
    page = f"https://127.0.0.1:{hub.info['http_port']}/ui/"
    with chromium(flags=(f"--ignore-certificate-errors-spki-list={spki_pin(certs)}",)) as d:
        d.get(page)
        d.execute_script("sessionStorage.setItem('backendai.token', arguments[0])", TOKEN)
        d.refresh()
        wait_until(lambda: len(d.find_elements("css selector", "#hosts-body .row")) == 3
                   and d.find_element("css selector", "#conn").text == "Live", 20,
                   "the fleet table, live over wss")
        assert d.execute_script("return location.protocol") == "https:"
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
