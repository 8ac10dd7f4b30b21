"""`aictl --manager …`: supervisorctl parity on one host (issue 11, item 7), the real CLI
against a real ai-manager with the real updater, over TCP (with a token) and over its
unix socket: status, start, stop, restart, logs [-f], update V, releases, rollback,
update-status, reload; --force during an update; wrong, missing, huge and hostile
addresses; exit statuses 0 / 1 / 2 / 3 as documented."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import assert_eventually
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
    if out.returncode == 0:  # Reload implemented (issue 15)
        assert "unchanged" in out.stdout
    else:
        assert out.returncode == 1 and "SIGHUP" in out.stderr, out.stderr


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
