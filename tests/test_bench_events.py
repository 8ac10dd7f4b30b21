"""bench/events.py and manager_vs_peers.py's event options keep working: one tiny run
each, figures present (not asserted: timing belongs in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import PY, ROOT
from tests.test_bench_smoke import bench, left_behind

KEYS = {"write_queued_1_per_turn_us", "write_queued_10_per_turn_us",
        "write_queued_100_per_turn_us", "state_write_without_events_us",
        "state_write_with_its_event_us", "event_own_tx_sync_full_us", "deliver_jsonl_us",
        "deliver_webhook_us", "deliver_opensearch_us"}


def test_event_costs_are_reported(tmp_path):
    out = tmp_path / "events.json"
    proc = subprocess.run([PY, "bench/events.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == KEYS
    assert all(v > 0 for v in figures.values())


def test_peers_bench_runs_a_baseline_beside_ours_with_sinks(tmp_path):
    out = tmp_path / "peers.json"
    proc, mark = bench("bench/manager_vs_peers.py", "--smoke", "--no-systemd",
                       "--baseline", "events-base", "--event-sinks", "--json", str(out),
                       timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("restart_ms", "status_p50_ms_grpc", "status_p50_ms_http", "rss_mb_1"):
        assert figures[key]["ours"] > 0 and figures[key]["baseline"] > 0, key
    assert "| ours/baseline |" in proc.stdout
    assert left_behind(mark) == []
