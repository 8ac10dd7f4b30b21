"""/metrics: what a scrape costs, and what being scraped costs a manager.

1. Scrape time of a real manager with 50 services (`/bin/sleep infinity`), beside the
   same transport's floor (`GET /version`) and the same 50 statuses as JSON
   (`GET /api/services?page_size=50`), over one keep-alive connection.
2. Scrape time of a real hub with 1,000 simulated managers (tests/fixtures/sim_manager.py,
   as bench/hub_scale.py), all connected, beside `GET /api/info`; again after a full
   rollout (its counters and histograms filled); and the collector alone in-process.
3. Metrics off and on side by side in one run: two managers with one service each, one
   never scraped, the other scraped by a Prometheus-like client every `--every` seconds
   (its prometheus_client loaded, its registry built); their status p50 (gRPC, HTTP)
   taken in turns and their kill -9 -> new PID alternating.

    .venv/bin/python bench/metrics_scrape.py [--hosts 1000] [--procs 6] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from manager_vs_peers import (  # noqa: E402 - after the path setup
    SLEEPER,
    children,
    pct,
    rss_mb,
    running_sleep,
    timed_calls,
    wait_for,
)
from peers_ours import OurManager, pb  # noqa: E402

from backendai.v1 import hub_pb2 as hpb  # noqa: E402
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers  # noqa: E402

Row = tuple[str, str, str, str, str]


class Client:
    """One keep-alive HTTP connection; get() returns the body's size."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> int:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return len(body)

    def close(self) -> None:
        self.conn.close()


def first_ms(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def row(what: str, samples: list[float], size: int | str = "") -> Row:
    return (what, f"{pct(samples, 0.5):.2f}", f"{pct(samples, 0.99):.2f}",
            str(len(samples)), f"{size:,}" if isinstance(size, int) else size)


def manager_50(tmp: Path, n: int, out: dict[str, Any]) -> list[Row]:
    m = OurManager(tmp / "m50", [{"name": f"svc{i:02d}", "command": SLEEPER,
                                  "start_secs": 0.0} for i in range(50)])
    m.start()
    client = Client(m.info["http_port"])
    try:
        wait_for(lambda: all(s.state == pb.SERVICE_STATE_RUNNING for s in m.grpc().ListServices(
            pb.ListServicesRequest(), timeout=30).services), 30, "50 services running", 0.05)
        first = first_ms(lambda: client.get("/metrics"))
        size = client.get("/metrics")
        rows = [("manager, 50 services: first /metrics (loads prometheus_client)",
                 f"{first:.1f}", "", "1", f"{size:,}")]
        scrape = timed_calls(lambda: client.get("/metrics"), n)
        rows.append(row("manager, 50 services: GET /metrics", scrape, size))
        rows.append(row("  same transport: GET /version", timed_calls(
            lambda: client.get("/version"), n), client.get("/version")))
        rows.append(row("  the 50 statuses as JSON: GET /api/services?page_size=50",
                        timed_calls(lambda: client.get("/api/services?page_size=50"), n),
                        client.get("/api/services?page_size=50")))
        out["manager50_scrape_p50_ms"] = round(pct(scrape, 0.5), 2)
        out["manager50_scrape_bytes"] = size
        return rows
    finally:
        client.close()
        m.close()


def hub_side_ms(n_hosts: int, reps: int) -> float:
    """The hub's collector and the text rendering in-process, for n hosts (median)."""
    import asyncio  # noqa: PLC0415 - only this measurement needs it

    from backendai.metrics_export import new_registry, render  # noqa: PLC0415
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415
    from hub.config import HostEntry  # noqa: PLC0415
    from hub.inventory import HostView, Inventory  # noqa: PLC0415
    from hub.metrics import HubCollector  # noqa: PLC0415
    from hub.stats import HubStats  # noqa: PLC0415

    async def measure() -> float:
        inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]
        for i in range(n_hosts):
            view = HostView(HostEntry(f"h{i:05d}", f"10.0.{i // 250}.{i % 250}:3082"))
            view.reachable, view.agent_heartbeat = True, time.time()
            view.status = mpb.ServiceStatus(name="ai-agent", version=f"2.{i % 3}")
            inv.hosts[view.name] = view
        rollouts = type("Rollouts", (), {"runners": {}})()
        reg = new_registry([HubCollector(inventory=inv, rollouts=rollouts,  # type: ignore[arg-type]
                                         stats=HubStats(), version="x")])
        return statistics.median(timed_calls(lambda: render(reg), reps))

    return asyncio.run(measure())


def hub_1000(tmp: Path, hosts: int, procs: int, n: int, out: dict[str, Any]) -> list[Row]:
    sims: list[SimManagers] = []
    hub: HubProc | None = None
    client: Client | None = None
    try:
        per = -(-hosts // procs)
        addresses: dict[str, str] = {}
        for i in range(procs):
            sim = SimManagers(tmp, hosts=min(per, hosts - i * per), delay=0.2,
                              prefix=f"p{i}-", name=f"sim{i}")
            sims.append(sim)
            sim.start()
            addresses.update(sim.hosts)
        hub = HubProc(tmp, addresses, extra={"tick_seconds": 0.25, "call_timeout": 30.0})
        hub.start()
        h = hub
        wait_for(lambda: sum(x.reachable for x in h.call(
            "ListHosts", hpb.ListHostsRequest(), timeout=60).hosts) == hosts, 300,
            "every host reachable", 0.5)
        client = Client(hub.info["http_port"])
        c = client
        first = first_ms(lambda: c.get("/metrics"))
        size = c.get("/metrics")
        rows = [(f"hub, {hosts:,} hosts: first /metrics (loads prometheus_client)",
                 f"{first:.1f}", "", "1", f"{size:,}")]
        scrape = timed_calls(lambda: c.get("/metrics"), n)
        rows.append(row(f"hub, {hosts:,} hosts connected: GET /metrics", scrape, size))
        rows.append(row("  same transport: GET /api/info", timed_calls(
            lambda: c.get("/api/info"), n), c.get("/api/info")))
        out["hub_scrape_p50_ms"] = round(pct(scrape, 0.5), 2)
        out["hub_scrape_p99_ms"] = round(pct(scrape, 0.99), 2)
        r = hub.call("StartRollout", hpb.StartRolloutRequest(
            version="2.0", strategy=hpb.RolloutStrategy(seed=1))).rollout
        during: list[float] = []
        info: list[float] = []  # the loop's own delay: the same transport, a tiny answer
        while hub.rollout(r.id).state not in TERMINAL:
            during += timed_calls(lambda: c.get("/metrics"), 5, warm=0)
            info += timed_calls(lambda: c.get("/api/info"), 5, warm=0)
        done = hub.rollout(r.id)
        assert done.state == hpb.ROLLOUT_STATE_SUCCEEDED, done.message
        rows.append(row(f"hub, {hosts:,} hosts: GET /metrics during a full rollout", during))
        rows.append(row("  same transport, in turns with it: GET /api/info", info))
        after = timed_calls(lambda: c.get("/metrics"), n)
        rows.append(row(f"hub, {hosts:,} hosts: GET /metrics after it", after,
                        c.get("/metrics")))
        out["hub_scrape_during_rollout_p50_ms"] = round(pct(during, 0.5), 2)
        out["hub_scrape_after_rollout_p50_ms"] = round(pct(after, 0.5), 2)
        inside = hub_side_ms(hosts, n)
        rows.append((f"hub collector + text rendering in-process, {hosts:,} hosts",
                     f"{inside:.2f}", "", str(n), ""))
        out["hub_collect_in_process_ms"] = round(inside, 2)
        return rows
    finally:
        if client is not None:
            client.close()
        for p in [*([hub] if hub else []), *sims]:
            p.cleanup()


class Scraper(threading.Thread):
    """Scrapes a manager's /metrics every `every` seconds, as Prometheus would."""

    def __init__(self, port: int, every: float) -> None:
        super().__init__(daemon=True)
        self.client = Client(port)
        self.every = every
        self.stop = threading.Event()
        self.count = 0

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.client.get("/metrics")
            self.count += 1


def kill_to_new_pid(m: OurManager) -> float:
    """kill -9 of the service -> a new live, exec'd child of the manager (ms)."""
    old = wait_for(lambda: (s := m.status("svc0")).state == pb.SERVICE_STATE_RUNNING
                   and s.pid, 10, "svc0 running", 0.002)
    known = children(m.pid) | {old}
    t0 = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: {c for c in children(m.pid) - known if running_sleep(c)}, 10,
                   "a new pid", 0.0002)
    took = (time.perf_counter() - t0) * 1000
    wait_for(lambda: m.status("svc0").pid in new, 10, "new pid reported", 0.002)
    return took


def on_vs_off(tmp: Path, every: float, calls: int, kills: int,
              out: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    conf = [{"name": "svc0", "command": SLEEPER, "start_secs": 0.0, "crash_loop_window": 0.0,
             "crash_loop_max": 0}]
    off, on = OurManager(tmp / "off", conf), OurManager(tmp / "on", conf)
    scraper: Scraper | None = None
    try:
        for m in (off, on):
            m.start()
            wait_for(lambda m=m: m.status("svc0").state == pb.SERVICE_STATE_RUNNING, 20,
                     "running", 0.01)
        scraper = Scraper(on.info["http_port"], every)
        scraper.start()
        time.sleep(max(1.0, 2 * every))  # the first scrapes loaded prometheus_client
        samples: dict[tuple[str, str], list[float]] = {}
        req = pb.StatusRequest(service="svc0")
        subjects = {"off": off, "on": on}
        for turn in range(max(1, calls // 50)):
            order = ["off", "on"] if turn % 2 == 0 else ["on", "off"]
            for name in order:
                m = subjects[name]
                stub = m.grpc()
                samples.setdefault((name, "grpc"), []).extend(
                    timed_calls(lambda stub=stub: stub.Status(req, timeout=30), 50, warm=2))
                samples.setdefault((name, "http"), []).extend(
                    timed_calls(lambda m=m: m.get("/status?service=svc0"), 50, warm=2))
        restarts: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(kills):
            for name in (["off", "on"] if i % 2 == 0 else ["on", "off"]):
                restarts[name].append(kill_to_new_pid(subjects[name]))
                time.sleep(0.05)
        rss = {name: rss_mb(m.pid) for name, m in subjects.items()}
        rows = []
        for label, key, off_v, on_v in (
                ("status p50, gRPC (ms)", "status_p50_ms_grpc",
                 pct(samples["off", "grpc"], 0.5), pct(samples["on", "grpc"], 0.5)),
                ("status p50, HTTP (ms)", "status_p50_ms_http",
                 pct(samples["off", "http"], 0.5), pct(samples["on", "http"], 0.5)),
                ("status p99, gRPC (ms)", "status_p99_ms_grpc",
                 pct(samples["off", "grpc"], 0.99), pct(samples["on", "grpc"], 0.99)),
                ("kill -9 -> new PID running, median (ms)", "restart_ms",
                 statistics.median(restarts["off"]), statistics.median(restarts["on"])),
                ("RSS (MB)", "rss_mb", rss["off"], rss["on"])):
            rows.append((label, f"{off_v:.3f}", f"{on_v:.3f}", f"{on_v / off_v:.2f}"))
            out[f"{key}_metrics_off"] = round(off_v, 3)
            out[f"{key}_metrics_on"] = round(on_v, 3)
        out["scrapes_during"] = scraper.count
        return rows
    finally:
        if scraper is not None:
            scraper.stop.set()
            scraper.join(5)
            scraper.client.close()
        off.close()
        on.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=6)
    ap.add_argument("--every", type=float, default=1.0,
                    help="scrape interval of the scraped manager in part 3 (s)")
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help=argparse.SUPPRESS)  # a tiny run: the tests' check of the script
    args = ap.parse_args()
    n, calls, kills = ((10, 100, 2) if args.smoke else (50, 500, 6) if args.quick
                       else (200, 3000, 20))
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    out: dict[str, Any] = {"hosts": args.hosts}
    scrapes = manager_50(tmp, n, out)
    scrapes += hub_1000(tmp, args.hosts, args.procs, n, out)
    side = on_vs_off(tmp, args.every, calls, kills, out)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print("| scrape | p50 (ms) | p99 (ms) | samples | bytes |\n|---|---|---|---|---|")
    for r in scrapes:
        print("| " + " | ".join(r) + " |")
    print(f"\n| manager, 1 service | metrics off (never scraped) | metrics on (scraped "
          f"every {args.every:g} s) | on/off |\n|---|---|---|---|")
    for r in side:
        print("| " + " | ".join(r) + " |")
    print(f"\n{out['scrapes_during']} scrapes of the 'on' manager during part 3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
