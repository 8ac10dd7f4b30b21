"""Hub scale: one real `ai-hub` against many simulated managers (many servicers in a few
processes, a no-op install; tests/fixtures/sim_manager.py).

Measures: time until the hub sees every host, hub RSS and CPU per connected host,
ListHosts / HostStatus latency over the whole fleet, and the wall time and hub CPU of a
full staged rollout (default waves 1, 10%, 50%, 100%).

    .venv/bin/python bench/hub_scale.py [--hosts 500] [--procs 4] [--delay 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.v1 import hub_pb2 as pb  # noqa: E402 - after the path setup
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def hub_side_list_ms(n: int) -> float:
    """What ListHosts costs inside the hub (no transport): building the response for n
    hosts with live state, the same code the servicer runs; median of 30."""
    import asyncio  # noqa: PLC0415 - only this measurement needs it

    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415
    from hub.config import HostEntry  # noqa: PLC0415
    from hub.grpc_api import HubServicer  # noqa: PLC0415
    from hub.inventory import HostView, Inventory  # noqa: PLC0415

    async def measure() -> float:
        inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]
        for i in range(n):
            view = HostView(HostEntry(f"h{i:05d}", f"10.0.{i // 250}.{i % 250}:3082",
                                      {"group": "g" + str(i % 4)}))
            view.reachable, view.last_seen = True, time.time()
            view.status = mpb.ServiceStatus(name="ai-agent", state=mpb.SERVICE_STATE_RUNNING,
                                            version="2.0", pid=1000 + i)
            inv.hosts[view.name] = view
        servicer = HubServicer(version="x", inventory=inv, fleet=None,  # type: ignore[arg-type]
                               rollouts=None, leadership=None)  # type: ignore[arg-type]
        return statistics.median(timed(lambda: servicer._hosts(
            pb.ListHostsRequest(), None).SerializeToString(), 30))

    return asyncio.run(measure())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--delay", type=float, default=0.5, help="simulated update time (s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hub-scale-"))
    sims: list[SimManagers] = []
    hubs: list[HubProc] = []
    results: dict[str, float | int | str] = {"hosts": args.hosts, "sim_processes": args.procs,
                                             "update_seconds": args.delay}
    try:
        # baseline: a hub with no hosts
        base = HubProc(tmp, {}, name="hub-empty")
        hubs.append(base)
        base.start()
        base.call("ListHosts", pb.ListHostsRequest())
        time.sleep(1.0)  # bench, not a test: let the idle process settle before sampling
        base_rss = psutil.Process(base.proc.pid).memory_info().rss
        base.stop()

        t0 = time.perf_counter()
        per = -(-args.hosts // args.procs)
        addresses: dict[str, str] = {}
        for i in range(args.procs):
            n = min(per, args.hosts - i * per)
            sim = SimManagers(tmp, hosts=n, delay=args.delay, prefix=f"p{i}-", name=f"sim{i}")
            sims.append(sim)
            sim.start()
            addresses.update(sim.hosts)
        results["sim_start_seconds"] = round(time.perf_counter() - t0, 2)

        hub = HubProc(tmp, addresses, extra={"tick_seconds": 0.25, "call_timeout": 30.0})
        hubs.append(hub)
        t0 = time.perf_counter()
        hub.start()
        proc = psutil.Process(hub.proc.pid)
        wait_for(lambda: sum(h.reachable for h in hub.call(
            "ListHosts", pb.ListHostsRequest(), timeout=60).hosts) == args.hosts, 300,
            "every host reachable")
        results["connect_all_seconds"] = round(time.perf_counter() - t0, 2)
        time.sleep(2.0)  # bench: idle sample after the connect burst
        cpu0 = proc.cpu_times()
        time.sleep(5.0)
        cpu1 = proc.cpu_times()
        rss = proc.memory_info().rss
        results["hub_rss_mb"] = round(rss / 2**20, 1)
        results["hub_rss_empty_mb"] = round(base_rss / 2**20, 1)
        results["rss_per_host_kb"] = round((rss - base_rss) / args.hosts / 1024, 1)
        results["idle_cpu_percent"] = round(
            100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / 5.0, 2)

        lat = timed(lambda: hub.call("ListHosts", pb.ListHostsRequest(), timeout=60), 30)
        results["list_hosts_p50_ms"] = round(statistics.median(lat), 1)
        results["list_hosts_p99_ms"] = round(percentile(lat, 0.99), 1)
        lat = timed(lambda: hub.call("ListHosts", pb.ListHostsRequest(
            names=[next(iter(addresses))]), timeout=60), 30)
        results["list_one_host_p50_ms"] = round(statistics.median(lat), 1)
        results["list_hosts_hub_side_ms"] = round(hub_side_list_ms(args.hosts), 2)
        lat = timed(lambda: hub.call("HostStatus", pb.HostStatusRequest(timeout_seconds=30),
                                     timeout=120), 5)
        results["host_status_fanout_p50_ms"] = round(statistics.median(lat), 1)

        cpu0 = proc.cpu_times()
        t0 = time.perf_counter()
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="2.0", strategy=pb.RolloutStrategy(seed=1))).rollout
        done = hub.wait_rollout(r.id, TERMINAL, timeout=600)
        wall = time.perf_counter() - t0
        cpu1 = proc.cpu_times()
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done.message
        results["rollout_waves"] = ",".join(f"{w.spec}:{len(w.hosts)}" for w in done.waves)
        results["rollout_wall_seconds"] = round(wall, 2)
        results["rollout_hub_cpu_seconds"] = round(
            (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2)
        results["rollout_events"] = done.next_event_index
        updates = sum(sum(s.updates_per_host().values()) for s in sims)
        results["updates_issued"] = updates
        results["hub_rss_after_rollout_mb"] = round(proc.memory_info().rss / 2**20, 1)
    finally:
        for p in [*hubs, *sims]:
            p.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| figure | value |\n|---|---|")
        for k, v in results.items():
            print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
