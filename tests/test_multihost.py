"""Several hosts for real: the hub and three agent hosts, each in its own Linux network
namespace joined by a bridge, every manager on the real ports 3081/3082 at its own
address, bearer tokens between hosts. A staged rollout across them, with one host
partitioned (link down) mid-rollout: it is counted unreachable, the failure budget is
respected, and once the link returns the hub sees it again and a retry brings it to the
new version. All traffic stays inside the namespaces this test made; clients (aictl)
run inside the hub's namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from aictl import release
from aictl.demo_fleet import install_release
from backendai.auth import write_token
from tests.conftest import assert_eventually
from tests.netns import Host, NetnsLab, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OLD, NEW = "1.0.0", "1.1.0"

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path):
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made = NetnsLab()
    yield made
    made.close()
    # nothing the lab ran survives it: managers, hub, and the agents they supervised
    def left() -> list[list[str]]:
        return [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                if any(str(tmp_path) in arg for arg in p.info["cmdline"] or ())]

    assert_eventually(lambda: not left(), 10, what=f"no process left: {left()}")


def wait_ready(path: Path, host: Host, what: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        for proc in host.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited {proc.returncode}")
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data
    found: dict[str, Any] = assert_eventually(ready, 30, what=f"{what} ready")
    return found


class Fleet:
    def __init__(self, lab: NetnsLab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.store = root / "store"
        self.token = root / "fleet.token"
        write_token(self.token, "multi-host-secret")
        self.hub = lab.add_host("hub")
        self.agents = [lab.add_host(f"agent-{i}") for i in (1, 2, 3)]

    def aictl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.hub.run([PY, "-m", "aictl.main", *args, "--hub",
                             f"{self.hub.address}:3000", "--token-file", str(self.token)],
                            timeout=timeout, cwd=ROOT)

    def start_agent_host(self, host: Host) -> None:
        d = self.root / host.name
        d.mkdir()
        install_root = d / "opt" / "ai-agent"
        install_release(self.store / OLD / f"agent-{OLD}.tar.gz", install_root, OLD)
        (d / "agent.toml").write_text(tomli_w.dumps({
            "name": host.name, "grpc_listen": f"{host.address}:3080",
            # The agent's API is read-only host facts; the manager's health gate calls it.
            "insecure_no_auth": True,
            "hub_address": f"{self.hub.address}:3000", "hub_token_file": str(self.token),
            "manager_address": f"{host.address}:3082", "heartbeat_interval": 0.5,
            "labels": {"site": "lab"}, "log_format": "json"}))
        (d / "manager.toml").write_text(tomli_w.dumps(
            {"role": "agent", "http_listen": f"{host.address}:3081",
             "grpc_listen": f"{host.address}:3082", "state_dir": str(d / "state"),
             "auth_token_file": str(self.token), "log_format": "json",
             "services": [{
                "name": "ai-agent", "package": "@backend-ai/agent",
                "command": ["bin/ai-agent", "--config", str(d / "agent.toml")],
                "env": {"AI_PYTHON": PY}, "install_root": str(install_root),
                "package_url": f"file://{self.store}/{{version}}/agent-{{version}}.tar.gz",
                "start_secs": 0.5, "stop_timeout": 5.0, "min_healthy_time": 0.5,
                "healthy_deadline": 20.0, "health_probe": "grpc",
                "health_target": f"{host.address}:3080",
                "health_version_method": "backendai.v1.Agent/GetInfo"}]}))
        with (d / "manager.log").open("ab") as log:
            host.popen([PY, "-m", "manager.main", "--config", str(d / "manager.toml"),
                        "--ready-file", str(d / "ready.json")], cwd=ROOT, stdout=log,
                       stderr=log, start_new_session=True)
        wait_ready(d / "ready.json", host, f"{host.name} manager")

    def start_hub(self) -> None:
        d = self.root / "hub"
        d.mkdir()
        (d / "hub.toml").write_text(tomli_w.dumps(
            {"grpc_listen": f"{self.hub.address}:3000", "state_dir": str(d / "state"),
             "auth_token_file": str(self.token), "manager_token_file": str(self.token),
             "call_timeout": 3.0, "heartbeat_interval": 0.5, "tick_seconds": 0.1,
             "version": OLD, "log_format": "json",
             "hosts": [{"name": a.name, "manager": f"{a.address}:3082",
                        "labels": {"site": "lab"}} for a in self.agents]}))
        with (d / "hub.log").open("ab") as log:
            self.hub.popen([PY, "-m", "hub.main", "--config", str(d / "hub.toml"),
                            "--ready-file", str(d / "ready.json")], cwd=ROOT, stdout=log,
                           stderr=log, start_new_session=True)
        wait_ready(d / "ready.json", self.hub, "hub")

    def hosts(self) -> dict[str, dict[str, Any]]:
        out = self.aictl("agents", "--json")
        assert out.returncode == 0, out.stderr
        return {h["name"]: h for h in json.loads(out.stdout)}

    def rollout(self) -> dict[str, Any]:
        out = self.aictl("rollout", "show", "--json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data


def test_rollout_across_namespaced_hosts_with_a_partition(lab, tmp_path):
    fleet = Fleet(lab, tmp_path)
    release.build(OLD, fleet.store)
    release.build(NEW, fleet.store)
    for host in fleet.agents:
        fleet.start_agent_host(host)
    fleet.start_hub()
    assert_eventually(lambda: all(h["reachable"] and h["version"] == OLD
                                  for h in fleet.hosts().values()) and len(fleet.hosts()) == 3,
                      60, what="every manager reachable from the hub")

    # The canary first, then wait for a promote: between the waves one host is cut off.
    out = fleet.aictl("rollout", "start", NEW, "--waves", "1,100%", "--pause-until-promote",
                      "--max-failures-per-wave", "1", "--max-failures", "1",
                      "--min-healthy", "0.5", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    rollout = json.loads(out.stdout)
    canary = rollout["waves"][0]["hosts"][0]
    assert_eventually(lambda: fleet.rollout().get("awaiting_promote"), 90,
                      what="canary done, waiting for promote")
    assert fleet.hosts()[canary]["version"] == NEW
    cut = next(a for a in fleet.agents if a.name != canary)
    cut.link_down()
    out = fleet.aictl("rollout", "promote")
    assert out.returncode == 0, out.stderr
    done = assert_eventually(
        lambda: (r := fleet.rollout())["state"] in ("ROLLOUT_STATE_FAILED",
                                                    "ROLLOUT_STATE_SUCCEEDED") and r,
        120, what="rollout finished")
    # One unreachable host is within the budget: no rollback, the rest went ahead.
    assert done["state"] == "ROLLOUT_STATE_FAILED"
    states = {h["name"]: h["state"] for h in done["hosts"]}
    assert states[cut.name] == "HOST_ROLLOUT_STATE_UNREACHABLE"
    assert done["counts"]["unreachable"] == 1 and done["counts"]["succeeded"] == 2
    versions = {n: h["version"] for n, h in fleet.hosts().items() if n != cut.name}
    assert set(versions.values()) == {NEW}
    assert_eventually(lambda: not fleet.hosts()[cut.name]["reachable"], 30,
                      what="the hub sees the partitioned host as unreachable")

    # The link returns: the hub reconnects, sees the old version, and a retry finishes it.
    cut.link_up()
    assert_eventually(lambda: (h := fleet.hosts()[cut.name])["reachable"]
                      and h["version"] == OLD, 60, what="partitioned host back, still old")
    out = fleet.aictl("rollout", "retry-failed")
    assert out.returncode == 0, out.stderr
    final = assert_eventually(
        lambda: (r := fleet.rollout())["state"] in ("ROLLOUT_STATE_FAILED",
                                                    "ROLLOUT_STATE_SUCCEEDED") and r,
        120, what="retried rollout finished")
    assert final["state"] == "ROLLOUT_STATE_SUCCEEDED", final
    assert {h["version"] for h in fleet.hosts().values()} == {NEW}
