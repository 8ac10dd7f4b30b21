"""The other benchmarks keep working: bench/hub_scale.py (a real ai-hub against
simulated managers) and bench/update_timing.py (a real manager updating a real
release), each run tiny. Their figures are not asserted: timing belongs in
docs/BENCHMARKS.md, not in a test."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import psutil

from tests.conftest import PY, ROOT

MARKERS = ("hub.main", "manager.main", "agent.main", "sim_manager", "bin/ai-agent",
           "service.py", "bin/postgres")
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
                      "--delay", "0.05", "--json", timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout[out.stdout.index("{"):])
    assert figures["updates_issued"] == 12
    for key in ("list_hosts_hub_side_ms", "rollout_wall_seconds", "rollout_hub_cpu_seconds",
                "hub_rss_after_rollout_mb"):
        assert figures[key] > 0, key
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


def test_metrics_scrape_reports_scrapes_and_metrics_off_and_on():
    out, mark = bench("bench/metrics_scrape.py", "--hosts", "12", "--procs", "1",
                      "--smoke", "--json", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout[out.stdout.index("{"):])
    for key in ("manager50_scrape_p50_ms", "hub_scrape_p50_ms", "hub_collect_in_process_ms",
                "hub_scrape_after_rollout_p50_ms", "restart_ms_metrics_off",
                "restart_ms_metrics_on", "status_p50_ms_grpc_metrics_on", "rss_mb_metrics_on"):
        assert figures[key] > 0, key
    assert figures["scrapes_during"] >= 1  # the "on" manager really was scraped
    assert left_behind(mark) == []
