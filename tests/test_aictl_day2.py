"""aictl the way operators type it (issue 11, items 3, 5, 6 and 7 through the hub): global
options anywhere with AICTL_HUB as the fallback, --json piped into head ending quietly,
start / stop / restart HOST [SERVICE] through the hub, the dry run's store check,
--start-stopped, `rollout list` and `rollout show` counting outcomes alike, and cut
columns ending with "…". The real CLI against a real ai-hub with simulated managers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aictl import render
from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for

AICTL = [sys.executable, "-m", "aictl.main"]


def aictl(*args: str, env: dict | None = None, timeout: float = 60):
    full = {**os.environ, **(env or {})}
    for key in ("AICTL_HUB", "AICTL_MANAGER"):
        if env is None or key not in env:
            full.pop(key, None)
    return subprocess.run([*AICTL, *args], capture_output=True, text=True, timeout=timeout,
                          env=full)


@pytest.fixture
def fleet(tmp_path):
    sim = SimManagers(tmp_path, hosts=4, delay=0.05).start()
    hub = HubProc(tmp_path, sim.hosts).start()
    wait_for(lambda: all(h.reachable for h in hub.call(
        "ListAgents", pb.ListHostsRequest()).hosts), what="hosts reachable")
    yield sim, hub
    hub.cleanup()
    sim.cleanup()


def names(out) -> list[str]:
    return sorted(h["name"] for h in json.loads(out.stdout))


def test_global_options_anywhere_and_the_environment(fleet):
    sim, hub = fleet
    expected = sorted(sim.hosts)
    for args in (["--hub", hub.address, "agents", "--json"],
                 ["agents", "--hub", hub.address, "--json"],
                 ["--json", "agents", "--hub", hub.address],
                 ["--hub", "127.0.0.1:1", "agents", "--hub", hub.address, "--json"]):
        out = aictl(*args)
        assert out.returncode == 0, (args, out.stderr)
        assert names(out) == expected, args
    out = aictl("agents", "--json", env={"AICTL_HUB": hub.address})
    assert out.returncode == 0 and names(out) == expected
    out = aictl("agents", "--json", env={"AICTL_HUB": f"127.0.0.1:1,{hub.address}"})
    assert out.returncode == 0 and names(out) == expected  # HA lists still work
    out = aictl("agents", "--hub", hub.address, "--json", env={"AICTL_HUB": "127.0.0.1:1"})
    assert out.returncode == 0  # the flag wins over the environment
    for args in (["rollout", "--hub", hub.address, "list"],
                 ["--hub", hub.address, "rollout", "list"],
                 ["rollout", "list", "--hub", hub.address],
                 ["rollout", "--json", "--hub", hub.address, "list"]):
        out = aictl(*args)
        assert out.returncode == 0, (args, out.stderr)
        assert "no rollouts" in out.stdout or out.stdout.strip() == "[]", args
    out = aictl("rollout", "--hub", hub.address, "start", "2.0", "--dry-run", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "ROLLOUT_STATE_PLANNED"


def test_json_piped_into_head_ends_quietly(fleet):
    _sim, hub = fleet
    cmd = " ".join([*AICTL, "--hub", hub.address, "logs", "agent-000", "-f", "--json"])
    done = subprocess.run(["bash", "-c", f"{cmd} | head -n 2 >/dev/null; "
                           "echo ${PIPESTATUS[0]}"], capture_output=True, text=True,
                          timeout=60)
    assert done.stderr == "", done.stderr
    assert done.stdout.strip() == "141"
    cmd = " ".join([*AICTL, "rollout", "start", "2.0", "--hub", hub.address, "--watch",
                    "--json"])
    done = subprocess.run(["bash", "-c", f"{cmd} | head -n 1"], capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert json.loads(done.stdout)


def test_start_stop_restart_through_the_hub(fleet):
    _sim, hub = fleet
    out = aictl("restart", "agent-001", "--hub", hub.address)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("agent-001: ai-agent: RUNNING")
    out = aictl("--hub", hub.address, "restart", "agent-001", "ai-agent", "--force", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["host"] == "agent-001"
    for what in ("stop", "start"):
        out = aictl(what, "agent-002", "--hub", hub.address, "--force")
        assert out.returncode == 0, out.stderr
        assert ("STOPPED" if what == "stop" else "RUNNING") in out.stdout
    for args, needle in ((["restart"], "HOST"), (["stop", "a", "b", "c"], "HOST"),
                         (["restart", "ghost"], "ghost"),
                         (["restart", "../x"], "host"),
                         (["stop", "agent-001", "--timeout", "nan"], "--timeout"),
                         (["restart", "agent-001", "a b"], "service")):
        out = aictl(*args, "--hub", hub.address)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert needle in out.stderr and "Traceback" not in out.stderr


def test_dry_run_says_whether_the_store_has_each_package(fleet):
    sim, hub = fleet
    out = aictl("rollout", "start", "2.0", "--dry-run", "--hub", hub.address)
    assert out.returncode == 0, out.stderr
    assert "store: @backend-ai/agent 2.0 available (4 hosts) at http://store.sim/" in out.stdout
    sim.rules([{"call": "check", "version": "3.0", "outcome": "missing"}])
    out = aictl("rollout", "start", "3.0", "--dry-run", "--hub", hub.address)
    assert out.returncode == 1
    assert "MISSING" in out.stdout and "agent-3.0.tar.gz" in out.stdout
    out = aictl("rollout", "start", "3.0", "--hub", hub.address)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr
    assert "cannot be fetched" in out.stderr
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []


def test_start_stopped_flag_and_list_and_show_count_alike(fleet):
    sim, hub = fleet
    sim.rules([{"host": "agent-00[12]", "outcome": "failed"}])
    out = aictl("rollout", "start", "2.0", "--hub", hub.address, "--waves", "100%",
                "--max-failures", "3", "--max-failures-per-wave", "3", "--no-auto-rollback",
                "--start-stopped", "--json")
    assert out.returncode == 0, out.stderr
    rollout = json.loads(out.stdout)
    assert rollout["start_stopped"] is True
    done = hub.wait_rollout(rollout["id"], TERMINAL)
    assert (done.counts.succeeded, done.counts.failed) == (2, 2)
    listed = aictl("rollout", "list", "--hub", hub.address).stdout.splitlines()
    shown = aictl("rollout", "show", "--hub", hub.address).stdout.splitlines()[0]
    counted = render.counts_line(done.counts)
    assert counted == "2/4 succeeded, 2 failed"
    assert listed[0].split() == ["ID", "VERSION", "STATE", "OUTCOMES", "CREATED"]
    assert counted in listed[1] and shown.endswith(counted)


def test_cut_columns_end_with_an_ellipsis():
    assert render.clip("x" * 100, 60) == "x" * 59 + "…"
    assert render.clip("short", 60) == "short"
    assert render.clip("abc", 1) == "…" and render.clip("abc", 0) == ""

    class Host:
        name, wave, state, from_version, step = "h", 0, 5, "1.0", "health"
        message = "m" * 200

    class R:
        def __init__(self) -> None:
            self.hosts = [Host()]
    row = render.host_rows(R()).splitlines()[1]
    assert row.endswith("…") and len(row.split()[-1]) == render.MESSAGE_WIDTH
