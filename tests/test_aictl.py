"""aictl end to end: the real CLI (a subprocess, as an operator runs it) against a real
ai-hub process whose managers are simulated (FAKE managers, see
tests/fixtures/sim_manager.py: hundreds of lines of real gRPC servicers whose install is
a version switch; the real manager's updates are covered in tests/test_update_*.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for

AICTL = [sys.executable, "-m", "aictl.main"]


def aictl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AICTL, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fleet(tmp_path):
    sim = SimManagers(tmp_path, hosts=4, delay=0.05).start()
    hub = HubProc(tmp_path, sim.hosts,
                  labels={"agent-000": {"group": "canary"}}).start()
    wait_for(lambda: all(h.reachable for h in hub.call(
        "ListAgents", pb.ListHostsRequest()).hosts), what="hosts reachable")
    yield sim, hub
    hub.cleanup()
    sim.cleanup()


def test_help_is_fast_and_imports_no_grpc():
    code = ("import sys, aictl.main; aictl.main.build_parser(); "
            "print(sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "[]"
    out = aictl("--help")
    assert out.returncode == 0
    for command in ("agents", "status", "logs", "rollout", "release", "demo"):
        assert command in out.stdout


def test_agents_json_and_table(fleet):
    sim, hub = fleet
    out = aictl("agents", "--hub", hub.address, "--json")
    assert out.returncode == 0, out.stderr
    hosts = json.loads(out.stdout)
    assert sorted(h["name"] for h in hosts) == sorted(sim.hosts)
    assert all(h["reachable"] for h in hosts)
    out = aictl("agents", "--hub", hub.address, "--label", "group=canary")
    assert out.returncode == 0
    assert "agent-000" in out.stdout and "agent-001" not in out.stdout
    assert out.stdout.splitlines()[0].split()[:3] == ["HOST", "ROLE", "REACHABLE"]


def test_dry_run_shows_the_plan_and_starts_nothing(fleet):
    _, hub = fleet
    out = aictl("rollout", "start", "2.0", "--hub", hub.address, "--dry-run", "--seed", "7",
                "--waves", "1,50%,100%")
    assert out.returncode == 0, out.stderr
    assert "canary" in out.stdout and "seed 7" in out.stdout
    again = aictl("rollout", "start", "2.0", "--hub", hub.address, "--dry-run", "--seed", "7",
                  "--waves", "1,50%,100%")
    assert again.stdout == out.stdout  # the seed fixes wave membership
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []


def test_watch_a_successful_rollout_as_json_lines(fleet):
    sim, hub = fleet
    out = aictl("rollout", "start", "2.0", "--hub", hub.address, "--waves", "1,100%",
                "--watch", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    indexes = [int(e.get("index", 0)) for e in events]
    assert indexes == list(range(len(events)))  # every event, in order, no gaps
    assert events[-1]["final"] is True
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    out = aictl("rollout", "list", "--hub", hub.address, "--json")
    assert json.loads(out.stdout)[0]["state"] == "ROLLOUT_STATE_SUCCEEDED"
    out = aictl("rollout", "show", "--hub", hub.address)
    assert out.returncode == 0 and "succeeded" in out.stdout and "agent-003" in out.stdout


def test_failed_rollout_exits_non_zero_with_the_outcome(fleet):
    sim, hub = fleet
    sim.rules([{"host": "*", "version": "3.*", "outcome": "rolled_back"}])
    out = aictl("rollout", "start", "3.0", "--hub", hub.address, "--waves", "1,100%",
                "--watch")
    assert out.returncode == 1
    summary = "\n".join(out.stdout.strip().splitlines()[-2:])
    assert "version 3.0" in summary and "halted" in summary
    assert "failed" in summary or "rolled_back" in summary


def test_pause_resume_abort_from_the_cli(fleet):
    _, hub = fleet
    out = aictl("rollout", "start", "2.0", "--hub", hub.address, "--waves", "1,2,100%",
                "--pause-until-promote", "--json")
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout)["id"]
    wait_for(lambda: hub.rollout(rid).awaiting_promote, what="waiting for promote")
    out = aictl("rollout", "promote", rid, "--hub", hub.address)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: hub.rollout(rid).current_wave >= 1, what="second wave")
    out = aictl("rollout", "abort", rid, "--hub", hub.address, "--reason", "enough")
    assert out.returncode == 0, out.stderr
    done = hub.wait_rollout(rid, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ABORTED
    assert done.counts.skipped >= 1


@pytest.mark.parametrize(("args", "needle"), [
    (["rollout", "start", "2.0", "--waves", "0%,banana"], "wave"),
    (["rollout", "start", "../etc"], "version"),
    (["rollout", "start", "2.0", "--hosts", "no-such-host"], "no-such-host"),
    (["rollout", "show", "nope"], "nope"),
    (["agents", "--label", "novalue"], "KEY=VALUE"),
])
def test_bad_input_is_a_clear_error_with_exit_2(fleet, args, needle):
    _, hub = fleet
    out = aictl(*args, "--hub", hub.address)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []


@pytest.mark.parametrize("args", [
    ["rollout", "start", "2.0", "--max-parallel", "-1"],
    ["rollout", "start", "2.0", "--pause", "nan"],
    ["rollout", "start", "2.0", "--min-healthy", "1e99"],
    ["rollout", "frobnicate"],
    ["logs"],
])
def test_bad_flags_are_usage_errors(args):
    out = aictl(*args, "--hub", "127.0.0.1:1")
    assert out.returncode == 2
    assert "usage:" in out.stderr and "Traceback" not in out.stderr


def test_unreachable_hub_exits_3_quickly():
    # A port bound but not listening: connections are refused for as long as we hold it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        started = time.monotonic()
        out = aictl("agents", "--hub", f"127.0.0.1:{closed.getsockname()[1]}", timeout=60)
    assert out.returncode == 3
    assert "unavailable" in out.stderr
    assert time.monotonic() - started < 45


def test_token_file_is_sent_and_a_wrong_one_refused(tmp_path):
    from backendai.auth import write_token

    sim = SimManagers(tmp_path, hosts=1, delay=0.05).start()
    hub = HubProc(tmp_path, sim.hosts, token="hub-secret").start()
    try:
        good, bad = tmp_path / "good.token", tmp_path / "bad.token"
        write_token(good, "hub-secret")
        write_token(bad, "wrong")
        out = aictl("agents", "--hub", hub.address, "--token-file", str(good), "--json")
        assert out.returncode == 0, out.stderr
        out = aictl("agents", "--hub", hub.address, "--token-file", str(bad))
        assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr
        out = aictl("agents", "--hub", hub.address, "--token-file", str(tmp_path / "missing"))
        assert out.returncode == 2 and "--token-file" in out.stderr
    finally:
        hub.cleanup()
        sim.cleanup()


def test_tls_flags_reach_a_mutual_tls_hub_and_bad_files_are_usage_errors(tmp_path):
    from tests.fixtures.hub_procs import make_certs

    (tmp_path / "certs").mkdir()
    c = make_certs(tmp_path / "certs")
    sim = SimManagers(tmp_path, hosts=1, delay=0.05).start()
    hub = HubProc(tmp_path, sim.hosts, extra={"tls": {
        "cert_file": str(c / "server.pem"), "key_file": str(c / "server.key"),
        "client_ca_file": str(c / "ca.pem")}})
    try:
        hub.start()
        port = hub.info["grpc_port"]
        mutual = ["--tls-ca", str(c / "ca.pem"), "--tls-cert", str(c / "client.pem"),
                  "--tls-key", str(c / "client.key")]
        out = aictl("agents", "--hub", f"127.0.0.1:{port}", *mutual, "--json")
        assert out.returncode == 0, out.stderr
        assert [h["name"] for h in json.loads(out.stdout)] == list(sim.hosts)
        # the certificate names "localhost" too: dial that name, or check it explicitly
        out = aictl("agents", "--hub", f"localhost:{port}", *mutual, "--json")
        assert out.returncode == 0, out.stderr
        out = aictl("agents", "--hub", f"127.0.0.1:{port}", *mutual,
                    "--tls-server-name", "not-the-hub", "--json")
        assert out.returncode == 3 and "unavailable" in out.stderr
        # no client certificate, or plaintext: refused by the hub, exit 3 (unavailable)
        out = aictl("agents", "--hub", hub.address, "--tls-ca", str(c / "ca.pem"))
        assert out.returncode == 3, out.stderr
        out = aictl("agents", "--hub", hub.address)
        assert out.returncode == 3, out.stderr
        # bad flags: exit 2, one line naming the flag, nothing sent
        for args, message in (
                (["--tls-ca", str(tmp_path / "missing.pem")], "--tls-ca: cannot read"),
                (["--tls-ca", str(c / "ca.pem"), "--tls-cert", str(c / "client.pem")],
                 "--tls-cert and --tls-key go together"),
                (["--tls-ca", str(c / "ca.srl")], "--tls-ca: ")):
            out = aictl("agents", "--hub", hub.address, *args)
            assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr
    finally:
        hub.cleanup()
        sim.cleanup()
