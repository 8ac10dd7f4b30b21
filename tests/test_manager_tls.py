"""The manager's gRPC over TLS and mutual TLS (`[tls]`), a real hub reaching it with
`[manager_tls]`, grpcurl with `-cacert`, and the update health probe speaking TLS to a
real TLS agent (`health_tls`). Certificates are made with openssl as docs/SECURITY.md
says; every process here is real."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from backendai.auth import write_token
from backendai.config import Table
from backendai.errors import ConfigError
from backendai.tls import ClientTLS
from backendai.v1 import hub_pb2 as hpb
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from manager import config
from manager.config import HealthGate
from manager.updates.health_probe import ProbeSpec, probe_once
from tests.conftest import PY, ROOT, fast_service, to_toml
from tests.fixtures.hub_procs import HubProc, make_certs, wait_for
from tests.test_agent import AgentProc

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
TOKEN = "manager-secret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A second, unrelated CA: its certificates must not be trusted."""
    return make_certs(tmp_path_factory.mktemp("other"))


def client_creds(c: Path, *, with_cert: bool = True) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(c / "ca.pem").read_bytes(),
        private_key=(c / "client.key").read_bytes() if with_cert else None,
        certificate_chain=(c / "client.pem").read_bytes() if with_cert else None)


def server_tls(c: Path, mutual: bool = True) -> dict[str, str]:
    table = {"cert_file": str(c / "server.pem"), "key_file": str(c / "server.key")}
    if mutual:
        table["client_ca_file"] = str(c / "ca.pem")
    return table


def status_code(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        pb_grpc.ManagerStub(channel).Status(
            pb.StatusRequest(), timeout=5, metadata=[("authorization", f"Bearer {TOKEN}")])
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tls_manager(make_manager, tmp_path, certs):
    write_token(tmp_path / "manager.token", TOKEN)
    m = make_manager([fast_service("svc")], top={
        "auth_token_file": str(tmp_path / "manager.token"), "tls": server_tls(certs)})
    m.token = TOKEN
    return m.start()


def test_manager_serves_mutual_tls_and_refuses_plaintext_and_certless_clients(
        tls_manager, certs, other_ca):
    m = tls_manager
    with grpc.secure_channel(m.grpc_addr, client_creds(certs)) as ch:
        wait_for(lambda: pb_grpc.ManagerStub(ch).Status(
            pb.StatusRequest(), timeout=5, metadata=m.metadata()).state
            == pb.SERVICE_STATE_RUNNING, 20, "service running, seen over mutual TLS")
        # TLS does not replace the token: both are checked
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.ManagerStub(ch).Status(pb.StatusRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.secure_channel(m.grpc_addr, client_creds(certs, with_cert=False)) as ch:
        assert status_code(ch) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(m.grpc_addr) as ch:
        assert status_code(ch) == grpc.StatusCode.UNAVAILABLE
    # a client certificate from another CA is refused; so is a server we cannot verify
    with grpc.secure_channel(m.grpc_addr, grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca.pem").read_bytes(),
            private_key=(other_ca / "client.key").read_bytes(),
            certificate_chain=(other_ca / "client.pem").read_bytes())) as ch:
        assert status_code(ch) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(m.grpc_addr, client_creds(other_ca)) as ch:
        assert status_code(ch) == grpc.StatusCode.UNAVAILABLE
    # the seeds' HTTP API on its own port is unchanged (plain HTTP, token checked)
    code, body = m.http("GET", "/status")
    assert code == 200 and json.loads(body)["running"] is True
    assert m.proc is not None and m.proc.poll() is None


def test_grpcurl_with_cacert_and_client_certificate(tls_manager, certs):
    m = tls_manager
    tls_args = ["-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"),
                "-key", str(certs / "client.key")]
    out = grpcurl(*tls_args, m.grpc_addr, "list")
    assert out.returncode == 0, out.stderr
    assert "backendai.v1.Manager" in out.stdout and "grpc.health.v1.Health" in out.stdout
    out = grpcurl(*tls_args, "-H", f"authorization: Bearer {TOKEN}", m.grpc_addr,
                  "backendai.v1.Manager/Status")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "svc"
    health = grpcurl(*tls_args, m.grpc_addr, "grpc.health.v1.Health/Check")
    assert health.returncode == 0 and "SERVING" in health.stdout
    # without the client certificate, or in plaintext, grpcurl cannot get in
    assert grpcurl("-cacert", str(certs / "ca.pem"), m.grpc_addr, "list").returncode != 0
    assert grpcurl("-plaintext", m.grpc_addr, "list").returncode != 0


def test_real_hub_reaches_tls_managers_with_its_client_certificate(
        make_manager, tmp_path, certs):
    write_token(tmp_path / "manager.token", TOKEN)
    managers = {}
    for i in range(2):
        m = make_manager([fast_service("svc")], name=f"m{i}", top={
            "auth_token_file": str(tmp_path / "manager.token"), "tls": server_tls(certs)})
        m.token = TOKEN
        m.credentials = client_creds(certs)
        managers[f"host-{i}"] = m.start()
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in managers.items()},
                  manager_token=TOKEN, extra={"manager_tls": {
                      "ca_file": str(certs / "ca.pem"), "cert_file": str(certs / "client.pem"),
                      "key_file": str(certs / "client.key")}})
    try:
        hub.start()
        wait_for(lambda: all(h.reachable and h.state == pb.SERVICE_STATE_RUNNING
                             for h in hub.call("ListHosts", hpb.ListHostsRequest()).hosts),
                 30, "hub watches both managers over mutual TLS")
        # a mutating call through the hub: the manager restarts its service
        before = managers["host-0"].status()
        after = hub.call("RestartService", hpb.RestartServiceRequest(host="host-0"))
        assert after.pid and after.pid != before.pid
        statuses = hub.call("HostStatus", hpb.HostStatusRequest())
        assert all(h.reachable for h in statuses.hosts), statuses
    finally:
        hub.cleanup()


def test_hub_without_manager_tls_sees_tls_managers_unreachable(tls_manager, tmp_path):
    hub = HubProc(tmp_path, {"host-0": tls_manager.grpc_addr}, manager_token=TOKEN)
    try:
        hub.start()
        statuses = hub.call("HostStatus", hpb.HostStatusRequest(timeout_seconds=3))
        assert [h.reachable for h in statuses.hosts] == [False]
        assert statuses.hosts[0].error
    finally:
        hub.cleanup()


def probe(spec: ProbeSpec) -> tuple[bool, str, str | None]:
    result = asyncio.run(probe_once(spec, "3.1.4"))
    return result.ok, result.message, result.version


def test_health_probe_speaks_tls_to_a_real_tls_agent(tmp_path, certs, other_ca):
    agent = AgentProc(tmp_path, tls=server_tls(certs, mutual=False))
    try:
        agent.start()
        base = HealthGate(health_probe="grpc", health_target=agent.address,
                          health_version_method="backendai.v1.Agent/GetInfo")
        ca_only = ClientTLS(ca=(certs / "ca.pem").read_bytes())
        ok, message, version = probe(ProbeSpec(replace(base, health_tls=ca_only)))
        assert ok and version == "3.1.4", message
        # plaintext to a TLS agent, or a CA that did not sign its certificate: clear failures
        ok, message, _ = probe(ProbeSpec(base))
        assert not ok and "UNAVAILABLE" in message
        wrong = ClientTLS(ca=(other_ca / "ca.pem").read_bytes())
        ok, message, _ = probe(ProbeSpec(replace(base, health_tls=wrong)))
        assert not ok and "UNAVAILABLE" in message
    finally:
        agent.cleanup()


def test_health_probe_presents_a_client_certificate_to_a_mutual_tls_agent(tmp_path, certs):
    agent = AgentProc(tmp_path, tls=server_tls(certs, mutual=True))
    try:
        agent.start()
        base = HealthGate(health_probe="grpc", health_target=agent.address,
                          health_version_method="backendai.v1.Agent/GetInfo")
        mutual = ClientTLS.from_files(certs / "ca.pem", certs / "client.pem",
                                      certs / "client.key")
        ok, message, version = probe(ProbeSpec(replace(base, health_tls=mutual)))
        assert ok and version == "3.1.4", message
        ca_only = ClientTLS(ca=(certs / "ca.pem").read_bytes())
        ok, _, _ = probe(ProbeSpec(replace(base, health_tls=ca_only)))
        assert not ok
    finally:
        agent.cleanup()


def doc(tmp_path: Path, top: dict[str, object] | None = None,
        svc: dict[str, object] | None = None) -> dict[str, object]:
    service = {"name": "svc", "command": ["true"], **(svc or {})}
    return {"state_dir": str(tmp_path / "state"), "services": [service], **(top or {})}


def test_tls_config_keys_parse(tmp_path, certs):
    cfg = config.parse(doc(tmp_path, {"tls": server_tls(certs)}, {
        "health_probe": "grpc", "health_target": "127.0.0.1:1",
        "health_tls": {"ca_file": str(certs / "ca.pem"), "cert_file": str(certs / "client.pem"),
                       "key_file": str(certs / "client.key"), "server_name": "localhost"}}))
    assert cfg.tls is not None and cfg.tls.client_ca == (certs / "ca.pem").read_bytes()
    tls = cfg.primary.health.health_tls
    assert tls is not None and tls.server_name == "localhost" and tls.cert is not None
    https = config.parse(doc(tmp_path, svc={
        "health_probe": "http", "health_target": "https://127.0.0.1:1/health",
        "health_tls": {"ca_file": str(certs / "ca.pem")}}))
    assert https.primary.health.health_tls is not None


@pytest.mark.parametrize(("top", "svc", "message"), [
    ({"tls": "yes"}, {}, "tls: must be a table"),
    ({"tls": {"cert_file": "/nonexistent.pem"}}, {},
     "tls: cert_file and key_file are both required"),
    ({"tls": {"cert_file": "CERT", "key_file": "/nonexistent.key"}}, {},
     "tls.key_file: cannot read '/nonexistent.key'"),
    ({"tls": {"cert_file": "CERT", "key_file": "KEY", "bogus": 1}}, {}, "tls.bogus: unknown key"),
    ({"tls": {"cert_file": "CERT", "key_file": "NOTPEM"}}, {}, "is not a PEM file"),
    ({"tls": {"cert_file": "", "key_file": "KEY"}}, {}, "tls.cert_file: must be a file path"),
    ({}, {"health_probe": "tcp", "health_target": "127.0.0.1:1", "health_tls": {}},
     "services[0].health_tls: only the grpc and http probes speak TLS"),
    ({}, {"health_probe": "http", "health_target": "http://127.0.0.1:1/", "health_tls": {}},
     "services[0].health_tls: the http probe needs an https:// health_target"),
    ({}, {"health_probe": "http", "health_target": "https://127.0.0.1:1/",
          "health_tls": {"server_name": "x"}}, "takes no server_name"),
    ({}, {"health_probe": "grpc", "health_target": "127.0.0.1:1",
          "health_tls": {"cert_file": "CERT"}},
     "services[0].health_tls: cert_file and key_file go together"),
    ({}, {"health_probe": "grpc", "health_target": "127.0.0.1:1",
          "health_tls": {"server_name": 7}}, "services[0].health_tls.server_name"),
    ({}, {"health_probe": "grpc", "health_target": "127.0.0.1:1", "health_tls": []},
     "services[0].health_tls: must be a table"),
])
def test_bad_tls_config_names_the_key(tmp_path, certs, top, svc, message):
    (tmp_path / "not.pem").write_text("hello\n")
    files = {"CERT": str(certs / "server.pem"), "KEY": str(certs / "server.key"),
             "NOTPEM": str(tmp_path / "not.pem")}

    def real(value: object) -> object:
        if isinstance(value, dict):
            return {k: real(v) for k, v in value.items()}
        return files.get(value, value) if isinstance(value, str) else value

    with pytest.raises(ConfigError) as info:
        config.parse(doc(tmp_path, real(top), real(svc)))  # type: ignore[arg-type]
    assert message in str(info.value)


def test_ai_manager_with_a_broken_tls_table_exits_naming_the_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(to_toml({"state_dir": str(tmp_path / "state"),
                             "tls": {"cert_file": str(tmp_path / "missing.pem"),
                                     "key_file": str(tmp_path / "missing.key")}},
                            [{"name": "svc", "command": ["true"]}]))
    out = subprocess.run([PY, "-m", "manager.main", "--config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "tls.cert_file: cannot read" in out.stderr
    assert not (tmp_path / "state" / "manager.db").exists()


def test_https_health_probe_presents_a_client_certificate(tmp_path, certs):
    """An https health endpoint behind mutual TLS (a real TLS server on 127.0.0.1): the
    http probe passes with health_tls cert_file/key_file and reads the version; without
    them the handshake fails and the probe says so."""
    import http.server
    import threading

    from tests.fixtures.hub_procs import mutual_tls_server_context

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"version": "3.1.4"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.socket = mutual_tls_server_context(certs).wrap_socket(server.socket,
                                                                  server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = f"https://127.0.0.1:{server.server_address[1]}/health"
        mutual = ClientTLS.from_table(Table({"ca_file": str(certs / "ca.pem"),
                                             "cert_file": str(certs / "client.pem"),
                                             "key_file": str(certs / "client.key")},
                                            "health_tls"))
        gate = HealthGate(health_probe="http", health_target=target)
        ok, message, version = probe(ProbeSpec(replace(gate, health_tls=mutual)))
        assert ok and version == "3.1.4", message
        ca_only = ClientTLS.from_table(Table({"ca_file": str(certs / "ca.pem")}, "health_tls"))
        ok, message, _ = probe(ProbeSpec(replace(gate, health_tls=ca_only)))
        assert not ok and "HTTP probe failed" in message
    finally:
        server.shutdown()
        server.server_close()
