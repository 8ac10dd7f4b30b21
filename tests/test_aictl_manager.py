"""`aictl --manager …`: supervisorctl parity on one host (issue 11, item 7), the real CLI
against a real ai-manager with the real updater, over TCP (with a token) and over its
unix socket, and over mutual TLS: status, start, stop, restart, logs [-f], update V,
releases, rollback, update-status, reload (one that adds a service); --force during an
update; a missing or untrusted client certificate, a wrong CA; wrong, missing, huge and
hostile addresses; exit statuses 0 / 1 / 2 / 3 as documented."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import TAG_ENV, assert_eventually, fast_service, to_toml
from tests.fixtures.hub_procs import make_certs
from tests.update_support import started

pytestmark = pytest.mark.slow
AICTL = [sys.executable, "-m", "aictl.main"]


def aictl(*args: str, timeout: float = 120, env: dict | None = None):
    return subprocess.run([*AICTL, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture
def short_dir():
    """A directory short enough for a unix socket path (at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="aictl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host(env, short_dir):
    """One real manager with updates configured, a token, and a unix socket."""
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    token = short_dir / "token"
    token.write_text("manager-secret\n")
    token.chmod(0o600)
    sock = short_dir / "grpc.sock"
    m = env.manager({"auth_token_file": str(token), "grpc_socket": str(sock)},
                    min_healthy_time=2.0)
    m.token = "manager-secret"
    started(env, m)
    return env, m, ["--token-file", str(token)], sock


@pytest.mark.parametrize("transport", ["tcp", "unix", "bare-path"])
def test_status_stop_start_restart_logs_over_each_transport(host, transport):
    _env, m, token, sock = host
    where = {"tcp": m.grpc_addr, "unix": f"unix:{sock}", "bare-path": str(sock)}[transport]
    base = ["--manager", where, *token]
    out = aictl(*base, "status")
    assert out.returncode == 0, out.stderr
    assert "agent" in out.stdout and "RUNNING" in out.stdout and "1.0.0" in out.stdout
    out = aictl("status", *base, "--json")  # options after the command too
    assert out.returncode == 0 and json.loads(out.stdout)[0]["name"] == "agent"
    pid = m.status().pid
    out = aictl(*base, "stop", "agent")
    assert out.returncode == 0 and "STOPPED" in out.stdout, out.stderr
    out = aictl(*base, "status")
    assert out.returncode == 1 and "STOPPED" in out.stdout  # not every service runs
    out = aictl(*base, "start")
    assert out.returncode == 0 and "RUNNING" in out.stdout, out.stderr
    out = aictl(*base, "restart", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] not in (0, pid)
    out = aictl(*base, "logs", "-n", "5")
    assert out.returncode == 0 and "service starting version=1.0.0" in out.stdout
    out = aictl(*base, "status", "nope*")
    assert out.returncode == 2 and "no service matches" in out.stderr


def test_update_releases_rollback_update_status_and_reload(host):
    _env, m, token, sock = host
    base = ["--manager", f"unix:{sock}", *token]
    out = aictl(*base, "update", "1.1.0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started" in out.stdout and "health" in out.stdout and "succeeded" in out.stdout
    assert m.status().version == "1.1.0"
    assert m.status().update.last_origin.startswith("aictl:")
    out = aictl(*base, "update", "1.1.0")
    assert out.returncode == 0 and "lready on version 1.1.0" in out.stdout
    out = aictl(*base, "releases")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert any(line.startswith("1.1.0") and "current" in line for line in lines)
    assert any(line.startswith("1.0.0") and "previous" in line for line in lines)
    out = aictl(*base, "update-status")
    assert out.returncode == 0 and "update 1.0.0 -> 1.1.0" in out.stdout
    assert "commit" in out.stdout and "succeeded" in out.stdout
    out = aictl(*base, "rollback", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[-1]["final"] and events[-1]["outcome"] == "succeeded"
    assert m.status().version == "1.0.0"
    out = aictl(*base, "update", "9.9.9")
    assert out.returncode == 2 and "9.9.9" in out.stderr and "Traceback" not in out.stderr
    before = m.status().update.last_operation_id
    for bad in ("../etc", "v" * 10_000, "1.0;rm -rf /", ""):
        out = aictl(*base, "update", bad)
        assert out.returncode == 2 and "version" in out.stderr, (bad, out.stderr)
    assert m.status().version == "1.0.0" and m.status().update.last_operation_id == before
    out = aictl(*base, "update-status", "--id", "nope")
    assert out.returncode == 2 and "operation_id" in out.stderr
    out = aictl(*base, "reload")
    assert out.returncode == 0, out.stderr
    assert "reloaded: no service changed" in out.stdout
    assert "unchanged: agent" in out.stdout and "added: -" in out.stdout


def test_reload_that_adds_a_service(host):
    """The config file gains a service; `aictl reload` starts it and names it as added,
    the running one keeps its process."""
    _env, m, token, sock = host
    pid = m.status().pid
    extra = fast_service("extra", "--interval", "0.5", working_directory=str(m.root),
                         env={TAG_ENV: m.tag})  # the tag: the test's cleanup finds it
    m.config_path.write_text(to_toml(m.top, [*m.services, extra]))
    for where in (f"unix:{sock}", m.grpc_addr):
        out = aictl("--manager", where, *token, "reload")
        assert out.returncode == 0, out.stderr
        if where.startswith("unix:"):
            assert "added: extra" in out.stdout and "unchanged: agent" in out.stdout
            assert "reloaded: 1 added" in out.stdout
        else:  # the same file again
            assert "added: -" in out.stdout and "unchanged: agent, extra" in out.stdout
    assert_eventually(lambda: m.status("extra").state == pb.SERVICE_STATE_RUNNING, 20,
                      what="the added service running")
    assert m.status().pid == pid and m.status().restarts == 0
    out = aictl("--manager", m.grpc_addr, *token, "status", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(s["name"] for s in json.loads(out.stdout)) == ["agent", "extra"]
    out = aictl("--manager", m.grpc_addr, *token, "reload", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["unchanged"] == ["agent", "extra"]


def test_force_is_needed_during_an_update(host):
    _env, m, token, _sock = host
    base = ["--manager", m.grpc_addr, *token]
    out = aictl(*base, "update", "1.1.0", "--no-wait", "--json")
    assert out.returncode == 0, out.stderr
    op = json.loads(out.stdout)["operation_id"]
    assert_eventually(lambda: m.status().update.running_step == "health", 30)
    out = aictl(*base, "stop")
    assert out.returncode == 1 and op in out.stderr and "force" in out.stderr
    assert m.status().update.running_operation_id == op  # the update goes on
    out = aictl(*base, "stop", "--force")
    assert out.returncode == 0 and "STOPPED" in out.stdout, out.stderr
    st = m.status()
    assert st.update.last_outcome == "cancelled" and st.state == pb.SERVICE_STATE_STOPPED
    assert st.version == "1.0.0"


def test_logs_follow_piped_into_head_ends_quietly(host):
    """`logs -f --json | head -n 1`: head leaves after one line; aictl's next write finds
    the pipe closed and it ends quietly (status 141, as a tool killed by SIGPIPE)."""
    _env, m, token, sock = host
    cmd = " ".join([*AICTL, "--manager", str(sock), *token, "logs", "-f", "-n", "1",
                    "--json"])
    pipe = subprocess.Popen(["bash", "-c", f"{cmd} | head -n 1; echo status=${{PIPESTATUS[0]}}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = pipe.stdout.readline()
        assert json.loads(first)["line"]

        def ended() -> bool:  # each restart writes a line the follower sends on
            if pipe.poll() is None:
                m.stub().Restart(pb.RestartRequest(), timeout=30, metadata=m.metadata())
            return pipe.poll() is not None
        assert_eventually(ended, 60, what="aictl ends once head has gone")
        out, err = pipe.communicate(timeout=10)
    finally:
        if pipe.poll() is None:
            pipe.kill()
    assert err == "", err
    assert out.splitlines()[-1] == "status=141"


BAD_MANAGERS = [
    ("", "--manager"),
    ("nohost", "HOST:PORT"),
    ("1.2.3.4:99999", "port 1-65535"),
    ("unix:relative/sock", "absolute"),
    ("unix:/" + "x" * 200, "at most 107 bytes"),
    ("/tmp/\x01sock", "printable"),
    ("unix://host/sock", "absolute"),
    ("h\u00e9:1", "HOST:PORT"),
    ("; rm -rf /", "HOST:PORT"),
]


@pytest.mark.parametrize(("value", "needle"), BAD_MANAGERS)
def test_bad_manager_addresses_are_usage_errors(value, needle):
    out = aictl("--manager", value, "status", timeout=30)
    assert out.returncode == 2, (value, out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_unreachable_managers_and_misused_flags(short_dir):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        t0 = time.monotonic()
        out = aictl("--manager", f"127.0.0.1:{port}", "status", timeout=60)
    assert out.returncode == 3 and "unavailable" in out.stderr, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and time.monotonic() - t0 < 45
    out = aictl("--manager", str(short_dir / "none.sock"), "stop", timeout=60)
    assert out.returncode == 3 and "none.sock" in out.stderr
    out = aictl("--manager", str(short_dir / "x.sock"), "--tls-ca", "/etc/hosts", "status")
    assert out.returncode == 2 and "unix socket" in out.stderr
    for args in (["update", "1.1.0"], ["rollback"], ["releases"], ["reload"],
                 ["update-status"]):
        out = aictl(*args, timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 2 and "--manager" in out.stderr, (args, out.stderr)
    for args in (["stop", "--timeout", "nan"], ["stop", "--timeout", "-1"],
                 ["stop", "--timeout", "1e9"], ["logs", "-n", "x"]):
        out = aictl("--manager", "127.0.0.1:1", *args, timeout=30)
        assert out.returncode == 2 and "usage:" in out.stderr, (args, out.stderr)
    out = aictl("--manager", "127.0.0.1:1", "logs", "-n", "100001", timeout=30)
    assert out.returncode == 2 and "--lines" in out.stderr


# ---- over mutual TLS ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """An unrelated CA (with its own client certificate): never trusted by the manager."""
    return make_certs(tmp_path_factory.mktemp("other"))


@pytest.fixture
def tls_manager(make_manager, short_dir, certs):
    """A real manager serving gRPC over mutual TLS ([tls] with client_ca_file), with a
    token."""
    token = short_dir / "token"
    token.write_text("manager-secret\n")
    token.chmod(0o600)
    m = make_manager([fast_service("web")], top={
        "auth_token_file": str(token),
        "tls": {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key"),
                "client_ca_file": str(certs / "ca.pem")}})
    m.token = "manager-secret"
    m.credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "client.key").read_bytes(),
        certificate_chain=(certs / "client.pem").read_bytes())
    m.start()
    assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING, 20)
    return m, ["--token-file", str(token)]


def test_manager_over_mutual_tls(tls_manager, certs, other_ca):
    m, token = tls_manager
    base = ["--manager", m.grpc_addr, *token]
    mine = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"),
            "--tls-key", str(certs / "client.key")]
    out = aictl(*base, *mine, "status")
    assert out.returncode == 0, out.stderr
    assert "web" in out.stdout and "RUNNING" in out.stdout
    pid = m.status().pid
    out = aictl(*base, *mine, "restart", "web", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] not in (0, pid)
    pid = m.status().pid
    # each refusal: exit 3 (unreachable) and a line that says what to check
    refusals = {
        "no client certificate": (["--tls-ca", str(certs / "ca.pem")],
                                  "give --tls-cert and --tls-key"),
        "a client certificate of another CA": ([
            "--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(other_ca / "client.pem"),
            "--tls-key", str(other_ca / "client.key")], "does not accept the --tls-cert"),
        "the wrong CA for the server": ([
            "--tls-ca", str(other_ca / "ca.pem"), "--tls-cert", str(certs / "client.pem"),
            "--tls-key", str(certs / "client.key")], "not signed by the --tls-ca CA"),
        "plaintext to a TLS port": ([], "if it serves TLS ([tls]), give --tls-ca"),
    }
    for what, (flags, hint) in refusals.items():
        for command in (["status"], ["stop", "web"]):
            out = aictl(*base, *flags, *command, timeout=60)
            assert out.returncode == 3, (what, command, out.stdout, out.stderr)
            lines = out.stderr.splitlines()
            assert len(lines) == 2, (what, out.stderr)  # no gRPC core log lines
            assert lines[0].startswith(f"aictl: manager {m.grpc_addr} unavailable: ")
            assert hint in lines[1], (what, out.stderr)
            assert out.stdout == "", (what, out.stdout)
    # nothing reached the manager: the service was never stopped
    st = m.status()
    assert st.state == pb.SERVICE_STATE_RUNNING and st.pid == pid
    # files that are not what the flags say: a usage error naming the flag
    out = aictl(*base, "--tls-ca", "/nonexistent/ca.pem", "status", timeout=30)
    assert out.returncode == 2 and "--tls-ca" in out.stderr, out.stderr
    out = aictl(*base, "--tls-ca", str(certs / "ca.pem"), "--tls-cert",
                str(certs / "client.pem"), "status", timeout=30)
    assert out.returncode == 2 and "--tls-key" in out.stderr, out.stderr


def test_tls_flags_to_a_plaintext_manager(make_manager, certs):
    m = make_manager([fast_service("web")]).start()
    out = aictl("--manager", m.grpc_addr, "--tls-ca", str(certs / "ca.pem"), "status",
                timeout=60)
    assert out.returncode == 3, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"aictl: manager {m.grpc_addr} unavailable: ")
    assert "leave out the --tls-* flags" in lines[1] and len(lines) == 2, out.stderr
