"""The README's main job, end to end: `aictl demo --once` builds releases, starts a real
hub, real managers and real agents on loopback, rolls the fleet (hub first) to the new
version in waves, then sees the broken release halted at the canary and rolled back."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil


def test_demo_once_rolls_out_and_stops_the_broken_release(tmp_path):
    work = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "aictl.main", "demo", "--agents", "3",
                          "--once", "--dir", str(work)],
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded — 4/4 succeeded" in out.stdout  # the hub and 3 agents
    assert "version 1.2.0, rolled_back" in out.stdout
    assert "every agent runs 1.1.0" in out.stdout
    endpoints = json.loads((work / "endpoints.json").read_text())
    assert {h["role"] for h in endpoints["hosts"]} == {"hub", "agent"}
    assert len(endpoints["hosts"]) == 4
    # Every version stays on disk for rollback, and current points at 1.1.0 everywhere.
    for host in endpoints["hosts"]:
        service = "ai-hub" if host["role"] == "hub" else "ai-agent"
        current = (work / host["name"] / "opt" / service / "current").resolve()
        assert current.name == "1.1.0"
    # Nothing the demo started is left running.
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(work) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
