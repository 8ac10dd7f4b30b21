"""SIGHUP re-reads token and certificate files without a restart (manager, hub, agent):
the new ones take effect for new calls and connections; an unusable file changes
nothing and is logged. Real daemons, real signals, real TLS handshakes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import grpc
import pytest

from backendai.auth import Token, write_token
from backendai.config import Table
from backendai.daemon_support import DaemonLifecycle, Secrets
from backendai.errors import ConfigError
from backendai.tls import ReloadableServerCredentials, ServerTLS
from backendai.v1 import hub_pb2 as hpb
from backendai.v1 import hub_pb2_grpc as hpb_grpc
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from tests.conftest import ManagerProc, assert_eventually, fast_service
from tests.fixtures.hub_procs import HubProc, make_certs


def grpc_code(stub: pb_grpc.ManagerStub, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    try:
        stub.Status(pb.StatusRequest(), timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def hup(m: ManagerProc | HubProc) -> None:
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)


def log_events(m: ManagerProc | HubProc) -> list[dict[str, object]]:
    return [json.loads(line) for line in m.logs().splitlines() if line.startswith("{")]


def test_manager_sighup_rotates_its_token_and_keeps_it_when_the_file_is_bad(
        make_manager, tmp_path):
    token_file = tmp_path / "manager.token"
    write_token(token_file, "token-one")
    m = make_manager([fast_service("svc")], top={"auth_token_file": str(token_file)}).start()
    stub = m.stub()
    assert grpc_code(stub, "token-one") == grpc.StatusCode.OK
    write_token(token_file, "token-two")
    assert grpc_code(stub, "token-one") == grpc.StatusCode.OK  # read at start, until HUP
    hup(m)
    assert_eventually(lambda: grpc_code(stub, "token-two") == grpc.StatusCode.OK, 10)
    assert grpc_code(stub, "token-one") == grpc.StatusCode.UNAUTHENTICATED
    code, _ = m.http("GET", "/status", headers={"Authorization": "Bearer token-one"})
    assert code == 401
    code, _ = m.http("GET", "/status", headers={"Authorization": "Bearer token-two"})
    assert code == 200
    # an unusable file (readable by others) is refused: token-two stays in force
    write_token(token_file, "token-three")
    token_file.chmod(0o644)
    hup(m)
    assert_eventually(lambda: any(e["event"] == "daemon.reload_failed"
                                  for e in log_events(m)), 10)
    failed = next(e for e in log_events(m) if e["event"] == "daemon.reload_failed")
    assert "auth_token_file" in str(failed["error"]) and "token-three" not in m.logs()
    assert grpc_code(stub, "token-two") == grpc.StatusCode.OK
    assert grpc_code(stub, "token-three") == grpc.StatusCode.UNAUTHENTICATED
    assert m.proc is not None and m.proc.poll() is None


def test_sighup_refuses_two_named_tokens_that_became_one_value(make_manager, tmp_path):
    """The start refuses two `[[auth_tokens]]` sharing a value (it could not say who
    called); so does a SIGHUP that would make them share one: both stay as they were."""
    ops, viewer = tmp_path / "ops.token", tmp_path / "viewer.token"
    write_token(ops, "ops-secret")
    write_token(viewer, "viewer-secret")
    m = make_manager([fast_service("svc")], top={"auth_tokens": [
        {"name": "ops", "file": str(ops), "role": "admin"},
        {"name": "viewer", "file": str(viewer), "role": "read"}]}).start()
    stub = m.stub()
    assert grpc_code(stub, "viewer-secret") == grpc.StatusCode.OK
    write_token(viewer, "ops-secret")
    hup(m)
    assert_eventually(lambda: any(e["event"] == "daemon.reload_failed"
                                  for e in log_events(m)), 10)
    failed = next(e for e in log_events(m) if e["event"] == "daemon.reload_failed")
    assert "the same token as 'ops'" in str(failed["error"])
    assert "ops-secret" not in m.logs()
    assert grpc_code(stub, "viewer-secret") == grpc.StatusCode.OK  # nothing changed
    code, _ = m.http("POST", "/restart", headers={"Authorization": "Bearer viewer-secret"})
    assert code == 403  # still the read-only viewer's token, not an admin's
    write_token(viewer, "viewer-two")
    hup(m)
    assert_eventually(lambda: grpc_code(stub, "viewer-two") == grpc.StatusCode.OK, 10)
    assert grpc_code(stub, "viewer-secret") == grpc.StatusCode.UNAUTHENTICATED
    assert m.proc is not None and m.proc.poll() is None


def test_secrets_reload_checks_only_the_tokens_the_server_accepts(tmp_path):
    """A client token (the one a daemon presents to its hub) may equal a server token."""
    from backendai.auth import Tokens

    a, b, client = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for f, v in ((a, "one"), (b, "two"), (client, "three")):
        write_token(f, v)
    server = Tokens([Token.from_file(a, name="a"), Token.from_file(b, name="b")])
    hub_token = Token.from_file(client)
    secrets = Secrets([*server.tokens, hub_token], server=server)
    write_token(client, "one")
    assert secrets.reload() is True and hub_token.value == b"one"
    write_token(b, "one")
    assert secrets.reload() is False and "the same token as 'a'" in secrets.error
    assert [t.value for t in server.tokens] == [b"one", b"two"]


def test_manager_grpc_and_http_reload_rotate_its_token_as_sighup_does(make_manager, tmp_path):
    """Reload (gRPC) and POST /reload re-read the secrets as SIGHUP does: the new token
    works and the old one is refused on both transports; an unusable file fails the
    call naming the key, and the token in force stays."""
    token_file = tmp_path / "manager.token"
    write_token(token_file, "token-one")
    m = make_manager([fast_service("svc")], top={"auth_token_file": str(token_file)}).start()
    stub = m.stub()
    write_token(token_file, "token-two")
    assert grpc_code(stub, "token-one") == grpc.StatusCode.OK  # read at start, until a reload
    stub.Reload(pb.ReloadRequest(), timeout=60,
                metadata=[("authorization", "Bearer token-one")])  # asked with the old one
    assert grpc_code(stub, "token-two") == grpc.StatusCode.OK  # at once: the answer waited
    assert grpc_code(stub, "token-one") == grpc.StatusCode.UNAUTHENTICATED
    assert m.http("GET", "/status", headers={"Authorization": "Bearer token-one"})[0] == 401
    assert m.http("GET", "/status", headers={"Authorization": "Bearer token-two"})[0] == 200
    with pytest.raises(grpc.RpcError) as err:  # the old token cannot reload any more
        stub.Reload(pb.ReloadRequest(), timeout=60,
                    metadata=[("authorization", "Bearer token-one")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # over HTTP
    write_token(token_file, "token-three")
    code, body = m.http("POST", "/reload", headers={"Authorization": "Bearer token-two"})
    assert code == 200, body
    assert grpc_code(stub, "token-three") == grpc.StatusCode.OK
    assert grpc_code(stub, "token-two") == grpc.StatusCode.UNAUTHENTICATED
    # an unusable file (readable by others): the call fails naming the key, nothing changes
    write_token(token_file, "token-four")
    token_file.chmod(0o644)
    with pytest.raises(grpc.RpcError) as bad:
        stub.Reload(pb.ReloadRequest(), timeout=60,
                    metadata=[("authorization", "Bearer token-three")])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("auth_token_file: ")
    assert bad.value.details().endswith("nothing changed")
    assert "token-four" not in bad.value.details()
    assert grpc_code(stub, "token-three") == grpc.StatusCode.OK
    assert grpc_code(stub, "token-four") == grpc.StatusCode.UNAUTHENTICATED
    assert "token-four" not in m.logs() and "token-three" not in m.logs()
    assert m.proc is not None and m.proc.poll() is None


def mtls_creds(c: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(c / "ca.pem").read_bytes(),
        private_key=(c / "client.key").read_bytes(),
        certificate_chain=(c / "client.pem").read_bytes())


def tls_status(address: str, creds: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(address, creds) as channel:  # a new connection, a new handshake
        return grpc_code(pb_grpc.ManagerStub(channel), None)


def test_manager_sighup_replaces_its_certificates_for_new_connections(
        make_manager, tmp_path_factory, tmp_path):
    old = make_certs(tmp_path_factory.mktemp("old"))
    new = make_certs(tmp_path_factory.mktemp("new"))
    live = tmp_path / "tls"
    shutil.copytree(old, live)
    m = make_manager([fast_service("svc")], top={"tls": {
        "cert_file": str(live / "server.pem"), "key_file": str(live / "server.key"),
        "client_ca_file": str(live / "ca.pem")}}).start()
    assert tls_status(m.grpc_addr, mtls_creds(old)) == grpc.StatusCode.OK
    assert tls_status(m.grpc_addr, mtls_creds(new)) == grpc.StatusCode.UNAVAILABLE
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(new / name, live / name)
    hup(m)
    assert_eventually(lambda: tls_status(m.grpc_addr, mtls_creds(new)) == grpc.StatusCode.OK,
                      10, what="the new certificates in use")
    assert tls_status(m.grpc_addr, mtls_creds(old)) == grpc.StatusCode.UNAVAILABLE
    # a broken key file: the reload is refused, the new certificates stay in use
    (live / "server.key").write_text("not a key\n")
    hup(m)
    assert_eventually(lambda: any(e["event"] == "daemon.reload_failed"
                                  for e in log_events(m)), 10)
    assert tls_status(m.grpc_addr, mtls_creds(new)) == grpc.StatusCode.OK


def test_hub_sighup_rotates_its_token(tmp_path):
    hub = HubProc(tmp_path, {}, token="hub-one")
    try:
        hub.start()

        def code(token: str) -> grpc.StatusCode:
            with grpc.insecure_channel(hub.address) as channel:
                try:
                    hpb_grpc.HubStub(channel).ListHosts(
                        hpb.ListHostsRequest(), timeout=5,
                        metadata=[("authorization", f"Bearer {token}")])
                except grpc.RpcError as exc:
                    return exc.code()
            return grpc.StatusCode.OK

        assert code("hub-one") == grpc.StatusCode.OK
        write_token(tmp_path / "hub.token", "hub-two")
        hup(hub)
        assert_eventually(lambda: code("hub-two") == grpc.StatusCode.OK, 10)
        assert code("hub-one") == grpc.StatusCode.UNAUTHENTICATED
    finally:
        hub.cleanup()


def test_secrets_reload_is_all_or_nothing(tmp_path, tmp_path_factory):
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    token_file = tmp_path / "t.token"
    write_token(token_file, "first")
    token = Token.from_file(token_file)
    tls = ReloadableServerCredentials(ServerTLS.from_table(Table(
        {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")},
        "tls")))
    secrets = Secrets([token], tls)
    write_token(token_file, "second")
    os.rename(certs / "server.key", certs / "server.key.moved")
    assert secrets.reload() is False
    assert token.value == b"first"  # the good token file did not go in alone
    os.rename(certs / "server.key.moved", certs / "server.key")
    assert secrets.reload() is True and token.value == b"second"
    # mutual TLS cannot be switched on by a reload
    mutual = ReloadableServerCredentials(ServerTLS.from_table(Table(
        {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")},
        "tls")))
    assert mutual.current.files is not None
    cert, key, _ = mutual.current.files
    mutual.current = ServerTLS(mutual.current.cert, mutual.current.key, None,
                               (cert, key, certs / "ca.pem"))
    with pytest.raises(ConfigError, match="mutual TLS on or off needs a restart"):
        mutual.prepare()


async def test_reloads_run_on_the_loop_one_at_a_time_and_coalesce():
    """request_reload (what SIGHUP's handler calls) only records; the reloads task does
    the work, never two at once; requests during a reload make one more after it."""
    class Slow(DaemonLifecycle):
        def __init__(self) -> None:
            super().__init__()
            self.running = self.most = self.done = 0
            self.lock = threading.Lock()
            self.entered = threading.Event()
            self.release = threading.Event()
            self.second_done = threading.Event()

        def reload(self) -> bool:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            self.entered.set()
            self.release.wait(10)
            with self.lock:
                self.running -= 1
                self.done += 1
                if self.done == 2:
                    self.second_done.set()
            return True

    d = Slow()
    d.request_reload()
    assert d.done == 0 and not d.entered.is_set()  # recorded, not performed in the call
    task = asyncio.create_task(d.reloads())
    try:
        assert await asyncio.to_thread(d.entered.wait, 10)
        d.entered.clear()
        d.request_reload()  # two quick HUPs while the first reload runs
        d.request_reload()
        assert not await asyncio.to_thread(d.entered.wait, 0.3)  # no second one alongside
        assert d.running == 1
        d.release.set()
        assert await asyncio.to_thread(d.second_done.wait, 10)  # the one reload after it
        d.entered.clear()
        assert not await asyncio.to_thread(d.entered.wait, 0.3)  # and no third
        assert d.done == 2 and d.most == 1 and d.running == 0
    finally:
        d.release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_two_quick_sighups_reload_the_manager_one_at_a_time(make_manager, tmp_path):
    token_file = tmp_path / "manager.token"
    write_token(token_file, "token-one")
    m = make_manager([fast_service("svc")], top={"auth_token_file": str(token_file)}).start()
    stub = m.stub()
    write_token(token_file, "token-two")
    hup(m)
    hup(m)
    assert_eventually(lambda: grpc_code(stub, "token-two") == grpc.StatusCode.OK, 10)

    def marks() -> list[str]:
        return [str(e["event"]) for e in log_events(m)
                if e["event"] in ("daemon.signal", "daemon.reloading", "daemon.reloaded")]
    assert_eventually(lambda: marks()[-1] == "daemon.reloaded", 10)
    got = marks()
    # the kernel may merge two quick SIGHUPs into one; each one seen asks for a reload,
    # and each reload ends before the next begins
    signals = got.count("daemon.signal")
    reloads = [e for e in got if e != "daemon.signal"]
    assert 1 <= signals <= 2 and got[0] == "daemon.signal", got
    assert reloads in [["daemon.reloading", "daemon.reloaded"] * n
                       for n in range(1, signals + 1)], got
    assert grpc_code(stub, "token-one") == grpc.StatusCode.UNAUTHENTICATED
    assert m.proc is not None and m.proc.poll() is None
