"""The hub's dashboard at fleet scale: one real `ai-hub` against 1,000 simulated managers
(tests/fixtures/sim_manager.py, as bench/hub_scale.py uses), measured side by side in
one run:

- `GET /api/hosts` (every host, JSON) against gRPC `ListHosts` of the same hub: answer
  time (p50 / p99 of sequential calls from one client) and size;
- headless Chromium (Debian's, through Selenium): time from navigation to a rendered
  fleet table of every host (the frame after the last row is in the DOM), fresh loads;
- the hub's CPU during full rollouts of every host, alternating: none open, 10 open (5
  on the fleet page's socket, 5 watching the rollout), ..., none open (`--rounds` pairs
  and a last one without): the extra CPU the dashboards cost (median with / median
  without), and how many messages each dashboard got per second of the hub's clock (the
  feed coalesces: at most one per interval, whatever the event rate).

    .venv/bin/python bench/hub_dashboard.py [--hosts 1000] [--procs 4] [--delay 0.5]
        [--dashboards 10] [--loads 5] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub_scale_probe import timed  # noqa: E402 - bench/, beside this script

from backendai.v1 import hub_pb2 as pb  # noqa: E402 - after the path setup
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for  # noqa: E402

RENDERED = """
const want = arguments[0], done = arguments[arguments.length - 1];
function check() {
  if (document.querySelectorAll('#hosts-body .row').length >= want) {
    requestAnimationFrame(() => done(performance.now()));
  } else {
    requestAnimationFrame(check);
  }
}
check();
"""


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def http_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:200])
        return body
    finally:
        conn.close()


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class Dashboards:
    """N fleet WebSocket clients in a thread of their own, each reading and parsing
    every message as a page does; counts messages and bytes per client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[dict[str, Any]] = []
        self.tasks: list[Any] = []

    def open(self, path: str, n: int) -> None:
        ready = [threading.Event() for _ in range(n)]
        for event in ready:
            stats: dict[str, Any] = {"path": path, "messages": 0, "bytes": 0, "times": []}
            self.clients.append(stats)
            self.tasks.append(asyncio.run_coroutine_threadsafe(
                self._client(path, stats, event), self.loop))
        for event in ready:
            assert event.wait(30), "a dashboard did not get its snapshot"

    async def _client(self, path: str, stats: dict[str, Any], ready: threading.Event) -> None:
        from websockets.asyncio.client import connect  # noqa: PLC0415

        async with connect(f"ws://127.0.0.1:{self.port}{path}", max_size=64 << 20) as ws:
            async for raw in ws:
                msg = json.loads(raw)
                if not ready.is_set():
                    ready.set()  # the snapshot: not counted
                    continue
                stats["messages"] += 1
                stats["bytes"] += len(raw)
                stats["times"].append(msg["server_time"])  # when the hub sent it

    def close(self) -> None:
        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def rollout(hub: HubProc, proc: psutil.Process, version: str,
            dashboards: Dashboards | None, n: int) -> dict[str, Any]:
    """A full rollout of every host; the hub's CPU and wall time for it."""
    if dashboards is not None:
        dashboards.open("/api/fleet/ws", n - n // 2)
    cpu0, t0 = cpu_seconds(proc), time.perf_counter()
    r = hub.call("StartRollout", pb.StartRolloutRequest(
        version=version, strategy=pb.RolloutStrategy(seed=1)), timeout=120).rollout
    if dashboards is not None:
        dashboards.open(f"/api/fleet/ws?rollout={r.id}", n // 2)
    done = hub.wait_rollout(r.id, TERMINAL, timeout=900)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(proc) - cpu0
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done.message
    return {"wall": wall, "cpu": cpu, "events": done.next_event_index}


def page_load_ms(url: str, hosts: int, loads: int) -> list[float]:
    from tests.fixtures.components import chromium  # noqa: PLC0415

    out = []
    with chromium() as driver:
        driver.set_script_timeout(60)
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(url)
            out.append(float(driver.execute_async_script(RENDERED, hosts)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--delay", type=float, default=0.5, help="simulated update time (s)")
    ap.add_argument("--dashboards", type=int, default=10)
    ap.add_argument("--loads", type=int, default=5, help="page loads in Chromium")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rollouts with dashboards (each after one without)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hub-dashboard-"))
    sims: list[SimManagers] = []
    hub: HubProc | None = None
    dashboards: Dashboards | None = None
    res: dict[str, Any] = {"hosts": args.hosts, "dashboards": args.dashboards}
    try:
        per = -(-args.hosts // args.procs)
        addresses: dict[str, str] = {}
        for i in range(args.procs):
            n = min(per, args.hosts - i * per)
            sim = SimManagers(tmp, hosts=n, delay=args.delay, prefix=f"p{i}-", name=f"sim{i}")
            sims.append(sim)
            sim.start()
            addresses.update(sim.hosts)
        labels = {name: {"site": f"s{i % 7}", "group": f"g{i % 3}"}
                  for i, name in enumerate(sorted(addresses))}
        hub = HubProc(tmp, addresses, labels=labels,
                      extra={"tick_seconds": 0.25, "call_timeout": 30.0})
        hub.start()
        proc = psutil.Process(hub.proc.pid)
        port = hub.info["http_port"]
        wait_for(lambda: json.loads(http_get(port, "/api/info"))["reachable"] == args.hosts,
                 300, "every host reachable")

        # /api/hosts against gRPC ListHosts, the same hub, one after the other
        body = http_get(port, "/api/hosts")
        assert len(json.loads(body)["hosts"]) == args.hosts
        res["api_hosts_bytes"] = len(body)
        res["list_hosts_bytes"] = hub.call("ListHosts", pb.ListHostsRequest(),
                                           timeout=60).ByteSize()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def api_hosts() -> None:
            conn.request("GET", "/api/hosts")
            conn.getresponse().read()

        http_ms = timed(api_hosts, 30)
        grpc_ms = timed(lambda: hub.call("ListHosts", pb.ListHostsRequest(), timeout=60), 30)
        conn.close()
        res["api_hosts_p50_ms"] = round(statistics.median(http_ms), 1)
        res["api_hosts_p99_ms"] = round(percentile(http_ms, 0.99), 1)
        res["list_hosts_p50_ms"] = round(statistics.median(grpc_ms), 1)
        res["list_hosts_p99_ms"] = round(percentile(grpc_ms, 0.99), 1)

        loads = page_load_ms(f"http://127.0.0.1:{port}/ui/", args.hosts, args.loads)
        res["page_to_table_ms_median"] = round(statistics.median(loads))
        res["page_to_table_ms_max"] = round(max(loads))

        # the hub's CPU for full rollouts: none, 10 dashboards, none, ..., none
        time.sleep(2.0)  # bench: let the page's sockets close and the hub settle
        versions = iter(f"{n}.0" for n in range(2, 100))
        without: list[dict[str, Any]] = []
        with_d: list[dict[str, Any]] = []
        per_client = []
        for _ in range(args.rounds):
            without.append(rollout(hub, proc, next(versions), None, 0))
            dashboards = Dashboards(port)
            with_d.append(rollout(hub, proc, next(versions), dashboards, args.dashboards))
            for c in dashboards.clients:
                times = c["times"]
                per_client.append((c["messages"], c["bytes"],
                                   max((sum(1 for t in times if s <= t < s + 1.0)
                                        for s in times), default=0)))
            dashboards.close()
            dashboards = None
            time.sleep(2.0)  # bench: the dashboards' sockets close
        without.append(rollout(hub, proc, next(versions), None, 0))
        cpu_none = statistics.median(r["cpu"] for r in without)
        cpu_with = statistics.median(r["cpu"] for r in with_d)
        res["rollout_events"] = with_d[-1]["events"]
        res["rollout_wall_s_none"] = round(statistics.median(r["wall"] for r in without), 2)
        res["rollout_wall_s_dashboards"] = round(statistics.median(r["wall"] for r in with_d), 2)
        res["hub_cpu_s_none"] = " / ".join(f"{r['cpu']:.2f}" for r in without)
        res["hub_cpu_s_dashboards"] = " / ".join(f"{r['cpu']:.2f}" for r in with_d)
        res["hub_extra_cpu_percent"] = round(100 * (cpu_with - cpu_none) / cpu_none, 1)
        res["messages_per_dashboard"] = round(statistics.mean(c[0] for c in per_client), 1)
        res["kb_per_dashboard"] = round(statistics.mean(c[1] for c in per_client) / 1024, 1)
        res["most_messages_in_1s_any_dashboard"] = max(c[2] for c in per_client)
    finally:
        if dashboards is not None:
            dashboards.close()
        for p in [*([hub] if hub else []), *sims]:
            with contextlib.suppress(Exception):
                p.cleanup()
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = [
        ("hosts", res["hosts"], ""),
        ("every host, answer time p50 / p99 (ms)",
         f"{res['api_hosts_p50_ms']} / {res['api_hosts_p99_ms']}",
         f"{res['list_hosts_p50_ms']} / {res['list_hosts_p99_ms']}"),
        ("every host, answer size (bytes)", res["api_hosts_bytes"], res["list_hosts_bytes"]),
        ("Chromium: navigation to rendered fleet table, median / max (ms)",
         f"{res['page_to_table_ms_median']} / {res['page_to_table_ms_max']}", ""),
        ("full rollout: recorded events", res["rollout_events"], ""),
        ("full rollout wall time, median (s): none / with dashboards",
         f"{res['rollout_wall_s_none']} / {res['rollout_wall_s_dashboards']}", ""),
        ("hub CPU per rollout (s), no dashboard, in run order", res["hub_cpu_s_none"], ""),
        (f"hub CPU per rollout (s), {res['dashboards']} dashboards open, in run order",
         res["hub_cpu_s_dashboards"], ""),
        ("hub's extra CPU with the dashboards (median vs median, %)",
         res["hub_extra_cpu_percent"], ""),
        ("messages per dashboard during the rollout (mean)", res["messages_per_dashboard"], ""),
        ("most messages one dashboard got in any 1 s", res["most_messages_in_1s_any_dashboard"],
         ""),
        ("KB per dashboard during the rollout (mean)", res["kb_per_dashboard"], ""),
    ]
    print("| figure | HTTP JSON / dashboard | gRPC ListHosts |\n|---|---|---|")
    for name, ours, peer in rows:
        print(f"| {name} | {ours} | {peer} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
