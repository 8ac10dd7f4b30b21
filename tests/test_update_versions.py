"""deploy/update-versions.sh, the seeds' deployment flow: build, publish to a store, then
a staged rollout with the hub first. Run for real against a real hub; the managers are
simulated (FAKE: tests/fixtures/sim_manager.py — real managers updating from a real store
are covered by tests/test_demo.py and tests/test_update_*.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import HubProc, SimManagers, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "update-versions.sh"


def run(args: list[str], env: dict[str, str], timeout: float = 180,
        ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "AICTL": str(Path(sys.executable).parent / "aictl"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=full, stdin=subprocess.DEVNULL)


@pytest.fixture
def fleet(tmp_path):
    sim = SimManagers(tmp_path, hosts=3, delay=0.05).start()
    hub_sim = SimManagers(tmp_path, hosts=1, delay=0.05, prefix="hub-", name="hubsim").start()
    hub = HubProc(tmp_path, sim.hosts, self_manager=next(iter(hub_sim.hosts.values()))).start()
    wait_for(lambda: all(h.reachable for h in hub.call(
        "ListHosts", pb.ListHostsRequest()).hosts), what="hosts reachable")
    yield sim, hub_sim, hub
    hub.cleanup()
    hub_sim.cleanup()
    sim.cleanup()


def test_build_publish_and_roll_out_hub_first(fleet, tmp_path):
    sim, hub_sim, hub = fleet
    store = tmp_path / "store"
    out = run(["2.0.11", "--yes", "--waves", "1,100%"],
              {"STORE": store.as_uri(), "HUB": hub.address, "BUILD_DIR": str(tmp_path / "dist")})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    published = store / "2.0.11"
    assert sorted(p.name for p in published.iterdir()) == [
        "SHA256SUMS", "agent-2.0.11.tar.gz", "hub-2.0.11.tar.gz"]
    sums = dict(reversed(line.split("  ")) for line in
                (published / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((published / name).read_bytes()).hexdigest() == digest
    r = hub.rollout()
    assert r.state == pb.ROLLOUT_STATE_SUCCEEDED and r.include_hub
    assert hub_sim.updates_per_host() == dict.fromkeys(hub_sim.hosts, 1)
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    assert r.waves[0].hosts == ["hub"]


def test_dry_run_changes_nothing(fleet, tmp_path):
    sim, _, hub = fleet
    out = run(["2.0.12", "--dry-run"], {"HUB": hub.address})
    assert out.returncode == 0, out.stderr
    assert "plan for version 2.0.12" in out.stdout
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []
    assert sim.journal() == []


@pytest.mark.parametrize("version", ["../x", "", "-rf", "a b", "1.0/2", "x" * 100, "é1"])
def test_bad_versions_are_refused_before_anything_happens(tmp_path, version):
    out = run([version, "--yes"], {"STORE": (tmp_path / "s").as_uri(),
                                   "BUILD_DIR": str(tmp_path / "dist")})
    assert out.returncode == 2
    assert not (tmp_path / "dist").exists() and not (tmp_path / "s").exists()


def test_without_a_terminal_it_asks_for_yes(fleet, tmp_path):
    _, _, hub = fleet
    out = run(["2.0.13", "--no-build", "--no-publish"], {"HUB": hub.address})
    assert out.returncode == 2 and "--yes" in out.stderr
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []
