"""The other benchmarks keep working: bench/hub_scale.py (a real ai-hub against
simulated managers, on SQLite and a private PostgreSQL), bench/hub_storm.py (a fleet's
real registration loops reconnecting after a kill -9 of the hub), bench/update_timing.py
(a real manager updating a real release) and bench/hub_dashboard.py, each run tiny. Their
figures are not asserted: timing belongs in docs/BENCHMARKS.md, not in a test."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import psutil

from tests.conftest import PY, ROOT

MARKERS = ("hub.main", "manager.main", "agent.main", "sim_manager", "bin/ai-agent",
           "service.py", "bin/postgres", "storm_agents.py")
RUN_MARK = "BACKENDAI_BENCH_SMOKE_RUN"


def bench(*argv: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run a bench with a mark in its environment that every process it starts
    inherits, so `left_behind` sees only this run's processes (not the daemons of other
    tests running at the same time, in another pytest-xdist worker or checkout)."""
    mark = secrets.token_hex(8)
    out = subprocess.run([PY, *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, RUN_MARK: mark}, check=False)
    return out, mark


def left_behind(mark: str) -> list[list[str]]:
    """Daemons and services this run started that are still running."""
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or \
                not any(m in arg for arg in cmd for m in MARKERS):
            continue
        try:
            env = proc.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if env.get(RUN_MARK) == mark:
            out.append(cmd)
    return out


def test_hub_scale_runs_a_full_rollout_and_reports_its_figures():
    out, mark = bench("bench/hub_scale.py", "--hosts", "12", "--procs", "1",
                      "--delay", "0.05", "--settle", "0.2", "--idle", "0.5", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    (figures,) = json.loads(out.stdout[out.stdout.index("["):])
    assert (figures["store"], figures["hosts"]) == ("sqlite", 12)
    assert figures["updates_issued"] == 12
    assert figures["each_host_updated_once_per_rollout"] is True
    for key in ("list_hosts_hub_side_ms", "rollout_wall_seconds", "rollout_hub_cpu_seconds",
                "connect_all_seconds", "rss_per_host_kb"):
        assert figures[key] > 0, key
    assert left_behind(mark) == []


def test_hub_scale_both_stores_several_sizes_rollouts_and_followers_side_by_side():
    """--store sqlite,postgresql (a private PostgreSQL the bench starts and removes),
    two sizes, consecutive rollouts with the RSS after each, a follower hub's cost, and
    the markdown table with a column per run and the targets beside."""
    out, mark = bench("bench/hub_scale.py", "--hosts", "4,6", "--store", "sqlite,postgresql",
                      "--rollouts", "2", "--followers", "1", "--delay", "0.05",
                      "--settle", "0.1", "--idle", "0.5", "--json", timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    runs: list[dict[str, Any]] = json.loads(out.stdout[out.stdout.index("["):])
    assert [(r["store"], r["hosts"]) for r in runs] == [
        ("sqlite", 4), ("postgresql", 4), ("sqlite", 6), ("postgresql", 6)]
    for r in runs:
        assert r["updates_issued"] == 2 * r["hosts"]
        assert len(r["hub_rss_after_each_rollout_mb"].split(" / ")) == 2
        assert "rss_growth_first_to_last_percent" in r
        assert r["rollout_hub_cpu_seconds"] > 0
    for r in runs[1::2]:
        assert r["follower_rss_mb"] > 0 and "rollout_postgres_cpu_seconds" in r
    assert left_behind(mark) == []
    from bench.hub_scale import table

    text = table(runs)
    assert text.splitlines()[0] == ("| figure | sqlite 4 | postgresql 4 | sqlite 6 | "
                                    "postgresql 6 | target (10,000) |")
    assert "| rss_per_host_kb |" in text and "≤ 70" in text


def test_hub_scale_refuses_bad_options_before_starting_anything():
    for argv in (["--store", "mysql"], ["--hosts", "0"], ["--rollouts", "0"],
                 ["--settle", "-1"], ["--idle", "0"], ["--idle", "nan"], ["--settle", "1e9"]):
        out, mark = bench("bench/hub_scale.py", *argv, timeout=60)
        assert out.returncode == 2, argv
        assert "--" in out.stderr.splitlines()[-1], (argv, out.stderr)
        assert left_behind(mark) == []


def test_hub_storm_brings_the_fleet_back_with_and_without_admission_and_state():
    """Four storms in one run: the hub restarted with and without its state, each with
    admission control off and on; every one ends with the whole fleet back."""
    out, mark = bench("bench/hub_storm.py", "--hosts", "12", "--procs", "1", "--agent-procs",
                      "2", "--channels", "2", "--heartbeat", "1", "--cap", "60", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    runs: list[dict[str, Any]] = json.loads(out.stdout[out.stdout.index("["):])
    assert [(r["restart"], r["admission"]) for r in runs] == [
        ("with its state", "off"), ("with its state", "on"),
        ("without its state", "off"), ("without its state", "on")]
    for r in runs:
        assert 0 < r["hub_answers_after_kill_seconds"] <= r["fleet_back_after_kill_seconds"]
        assert r["get_info_probes"] > 0 and r["get_info_p99_ms"] > 0
        assert r["hub_cpu_seconds"] >= 0
    for r in runs[2:]:  # a hub without its state: the fleet registers anew
        assert r["registrations"] > 0
    assert left_behind(mark) == []


def test_update_timing_reports_every_step():
    out, mark = bench("bench/update_timing.py", "--mb", "1", "--runs", "1", timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split("|")[1].strip() for line in out.stdout.splitlines()
            if line.startswith("| ")}
    assert {"download", "verify", "stage", "stop", "switch", "start", "health", "commit",
            "total", "downtime"} <= rows
    assert left_behind(mark) == []


def test_hub_dashboard_measures_the_api_the_page_and_the_dashboards_cpu():
    out, mark = bench("bench/hub_dashboard.py", "--hosts", "12", "--procs", "1",
                      "--delay", "0.05", "--dashboards", "2", "--loads", "1",
                      "--rounds", "1", "--json", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout[out.stdout.index("{"):])
    for key in ("api_hosts_p50_ms", "list_hosts_p50_ms", "api_hosts_bytes",
                "page_to_table_ms_median", "hub_cpu_s_dashboards", "messages_per_dashboard"):
        assert figures[key], key
    assert 1 <= figures["most_messages_in_1s_any_dashboard"] <= 5  # coalesced
    assert left_behind(mark) == []
