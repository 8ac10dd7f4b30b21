"""bench/manager_vs_peers.py keeps working: one tiny round against real peers (supervisord
from PyPI into bench/.venv-peers, a real systemd --user where it can start), and its JSON
carries exactly the figures the issue lists, then the floors ours is judged against
(bare grpcio servers, the required stack's RSS). The figures themselves are not asserted:
timing belongs in docs/BENCHMARKS.md, not in a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PY, ROOT

sys.path.insert(0, str(ROOT / "bench"))

from peers_systemd import CGROUP_ROOT, unavailable_reason

KEYS = ["rss_mb_1", "rss_mb_50", "status_p50_ms_grpc", "status_p50_ms_http",
        "status_all50_ms", "restart_ms", "stop_ignoring_term_s", "log_lines_per_s",
        "log_latency_p99_ms", "start_ready_s",
        # issue 15: health check cost, hung service -> new pid, reload of 50
        "health_cpu_pct_50", "hung_to_new_pid_s", "reload_ms_50"]
# the peers stream no logs and have no health checks
OURS_ONLY = {"log_lines_per_s", "log_latency_p99_ms", "health_cpu_pct_50",
             "hung_to_new_pid_s"}
NO_SYSTEMD = {"reload_ms_50"}  # measured against supervisord's `update` only
FLOORS = {"status_p50_ms_grpc": ["bare grpc.aio", "bare grpc.server"],
          "rss_mb_1": ["required stack"],
          "start_ready_s": ["required stack", "required imports"]}


def _bench_cgroups() -> set[str]:
    if not CGROUP_ROOT.exists():
        return set()
    return {p.name for p in CGROUP_ROOT.iterdir() if p.name.startswith("bench-systemd-")}


def test_smoke_round_writes_every_figure_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cgroups_before = _bench_cgroups()
    proc = subprocess.run([PY, str(ROOT / "bench" / "manager_vs_peers.py"), "--smoke",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| rss_mb_1 (MB) |" in proc.stdout  # the table
    results = json.loads(out.read_text())
    assert list(results) == [*KEYS, "floors"]
    floors = results.pop("floors")
    assert list(floors) == list(FLOORS)
    for key, subjects in FLOORS.items():
        floor = floors[key]
        assert list(floor) == ["ours", *subjects, *(f"ours/{s}" for s in subjects)], key
        assert floor["ours"] == results[key]["ours"]
        for subject in subjects:
            assert floor[subject] > 0, (key, subject)
            assert floor[f"ours/{subject}"] == floor["ours"] / floor[subject]
    with_systemd = unavailable_reason() == ""
    for key, entry in results.items():
        expected = ["ours", "supervisord", *(["systemd"] if with_systemd and key not in
                                             OURS_ONLY | NO_SYSTEMD else []), "ratio"]
        assert list(entry) == expected, key
        assert entry["ours"] > 0, key
        if key in OURS_ONLY:
            assert entry["supervisord"] is None and entry["ratio"] is None
        else:
            assert entry["supervisord"] > 0, key
            assert entry["ratio"] == entry["ours"] / entry["supervisord"]
    # systemd's cgroup directories removed (another checkout's run may end meanwhile)
    assert _bench_cgroups() - cgroups_before == set()
    leftovers = subprocess.run(["pgrep", "-f", "bench-peers-"], capture_output=True,
                               text=True, check=False).stdout.split()
    assert leftovers == []  # no daemon or service of the run survives it
