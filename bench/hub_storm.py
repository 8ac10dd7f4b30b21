"""Reconnect storm: a hub with N hosts (simulated managers, tests/fixtures/sim_manager.py)
whose agents and managers run the real registration loops (bench/storm_agents.py) is
killed -9 and restarted on the same port; the whole fleet comes back at once. Side by
side in one run: without admission control (`[admission]` rates 0) and with the
defaults, the hub coming back with its state (the usual case: every host is known) and
without it (a new hub, a lost disk: every host registers anew). Measured from the
restarted hub's first answer until every agent is registered again and the hub sees
every manager: how long that takes, GetInfo's latency meanwhile (one sent every 50 ms,
answered or not), how often callers were told "later", and the hub's CPU.

    .venv/bin/python bench/hub_storm.py [--hosts 10000] [--agent-procs 4] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hub_scale_probe import Fleet, cpu_of, keep_logs, percentile  # noqa: E402

from aictl.demo_fleet import stable_ports  # noqa: E402
from backendai.v1 import hub_pb2 as pb  # noqa: E402
from backendai.v1 import hub_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import assert_eventually  # noqa: E402
from tests.fixtures.hub_procs import PY, HubProc, Proc  # noqa: E402

OFF = {"register_rate": 0, "heartbeat_rate": 0, "watch_connects": 0}
ON: dict[str, Any] = {}  # the defaults (hub/admission.py)
PROBE_EVERY = 0.05


class StormAgents(Proc):
    def __init__(self, root: Path, name: str, argv: list[str]) -> None:
        super().__init__(root, name)
        self.argv = argv
        self.status_path = root / f"{name}.status.json"

    def start(self) -> StormAgents:
        self._spawn([PY, str(ROOT / "bench" / "storm_agents.py"), *self.argv,
                     "--ready-file", str(self.ready_path),
                     "--status-file", str(self.status_path)], wait=False)
        return self

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (OSError, ValueError):
            return {"registered": 0, "managers_registered": 0, "events": {}}


class Prober(threading.Thread):
    """A GetInfo sent every PROBE_EVERY seconds whether or not the last one was answered
    (a stalled hub shows as every probe sent meanwhile being late, not as one slow
    sample): (when sent, latency ms or None for an error)."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.samples: list[tuple[float, float | None]] = []
        self.stop = threading.Event()
        self.pending: list[Any] = []

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as ch:
            stub = pb_grpc.HubStub(ch)
            while not self.stop.is_set():
                sent = time.perf_counter()
                call = stub.GetInfo.future(pb.HubInfoRequest(), timeout=30)
                call.add_done_callback(lambda f, t=sent: self.samples.append(
                    (t, (time.perf_counter() - t) * 1000 if f.exception() is None else None)))
                self.pending.append(call)
                self.stop.wait(PROBE_EVERY)
            for call in self.pending:
                with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):
                    call.result()


def fleet_back(hub: HubProc, agents: list[StormAgents], hosts: int, managers: bool) -> bool:
    st = [a.status() for a in agents]
    if sum(s["registered"] for s in st) < hosts:
        return False
    if managers and sum(s["managers_registered"] for s in st) < hosts:
        return False
    try:
        listed = hub.call("ListHosts", pb.ListHostsRequest(), timeout=60).hosts
    except grpc.RpcError:  # the channel may still hold the restart's refused connection
        return False
    return sum(h.reachable and h.agent_connected for h in listed) >= hosts


def events(agents: list[StormAgents]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in agents:
        for k, v in a.status()["events"].items():
            out[k] = out.get(k, 0) + v
    return out


def storm(hub: HubProc, agents: list[StormAgents], mode: str, *, hosts: int, managers: bool,
          cap: float, fresh: bool) -> dict[str, Any]:
    """fresh: the hub comes back without its state (a new hub, a lost disk): every host
    registers as a new one."""
    hub.extra["admission"] = OFF if mode == "off" else ON
    before = events(agents)
    hub.kill9()
    killed = time.perf_counter()
    if fresh:
        shutil.rmtree(hub.state_dir)
    hub.start(same_port=True, wait=False)
    prober = Prober(hub.address)
    prober.start()
    try:
        hub.wait_ready(120)
        proc = psutil.Process(hub.proc.pid)  # type: ignore[union-attr]
        cpu0 = cpu_of([proc])
        assert_eventually(lambda: fleet_back(hub, agents, hosts, managers), cap, 2.0,
                          "the whole fleet back")
        back = time.perf_counter()
        cpu = cpu_of([proc]) - cpu0
    finally:
        prober.stop.set()
        prober.join(60)
    samples = sorted(prober.samples)
    first = next((t for t, ms in samples if ms is not None), None)
    assert first is not None, "the restarted hub never answered GetInfo"
    window = [(t, ms) for t, ms in samples if first <= t <= back]
    lat = [ms for _, ms in window if ms is not None]
    after = events(agents)
    told = sum(after.get(k, 0) - before.get(k, 0) for k in ("agent.hub_busy", "manager.hub_busy"))
    return {
        "restart": "without its state" if fresh else "with its state",
        "admission": mode,
        "hub_answers_after_kill_seconds": round(first - killed, 2),
        "fleet_back_after_kill_seconds": round(back - killed, 2),
        "get_info_probes": len(window),
        "get_info_p50_ms": round(statistics.median(lat), 1),
        "get_info_p99_ms": round(percentile(lat, 0.99), 1),
        "get_info_max_ms": round(max(lat), 1),
        "get_info_failed": sum(1 for _, ms in window if ms is None),
        "told_later": told,
        "registrations": sum(after.get(k, 0) - before.get(k, 0)
                             for k in ("agent.registered", "manager.registered")),
        "hub_cpu_seconds": round(cpu, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=0, help="simulated manager processes "
                    "(0: one per 1250 hosts)")
    ap.add_argument("--agent-procs", type=int, default=4)
    ap.add_argument("--channels", type=int, default=16, help="per agent process")
    ap.add_argument("--no-managers", action="store_true",
                    help="agents only (no managers' [hub] registration)")
    ap.add_argument("--heartbeat", type=float, default=10.0, help="the hub's heartbeat_interval")
    ap.add_argument("--cap", type=float, default=600.0, help="seconds a storm may take")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    managers = not args.no_managers
    tmp = Path(tempfile.mkdtemp(prefix="hub-storm-"))
    results: list[dict[str, Any]] = []
    agents: list[StormAgents] = []
    hub: HubProc | None = None
    try:
        procs = args.procs or max(1, -(-args.hosts // 1250))
        with Fleet(tmp / "sims", args.hosts, procs, 0.5) as fleet:
            hosts_file = tmp / "hosts.json"
            hosts_file.write_text(json.dumps(fleet.addresses))
            # ports below the ephemeral range: thousands of clients redialing a port in
            # it can self-connect and hold it, and the restarted hub could not bind
            grpc_port, http_port = stable_ports(2)
            hub = HubProc(tmp, {}, extra={"heartbeat_interval": args.heartbeat,
                                          "call_timeout": 30.0, "admission": OFF,
                                          "grpc_listen": f"127.0.0.1:{grpc_port}",
                                          "http_listen": f"127.0.0.1:{http_port}"})
            hub.start()
            per = -(-args.hosts // args.agent_procs)
            for i in range(args.agent_procs):
                argv = ["--hub", hub.address, "--hosts", str(hosts_file),
                        "--start", str(i * per), "--count", str(per),
                        "--channels", str(args.channels)]
                agents.append(StormAgents(tmp, f"agents{i}",
                                          [*argv, *(["--managers"] if managers else [])]).start())
            for a in agents:
                a.wait_ready(120)
            t0 = time.perf_counter()
            assert_eventually(lambda: fleet_back(hub, agents, args.hosts, managers),
                              args.cap, 2.0, "the fleet registered")
            print(f"# fleet registered in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            for fresh in (False, True):
                for mode in ("off", "on"):
                    results.append(storm(hub, agents, mode, hosts=args.hosts,
                                         managers=managers, cap=args.cap, fresh=fresh))
                    print(f"# storm {results[-1]['restart']}, admission {mode}: done",
                          file=sys.stderr, flush=True)
    except BaseException:
        keep_logs([*agents, *([hub] if hub else [])], "hub-storm")
        raise
    finally:
        for p in [*agents, *([hub] if hub else [])]:
            p.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"hosts {args.hosts}, agents{' and managers' if managers else ''} "
              "reconnecting after kill -9 and restart\n")
        print("| figure | " + " | ".join(f"{r['restart']}, admission {r['admission']}"
                                         for r in results) + " |")
        print("|---" * (len(results) + 1) + "|")
        for k in results[0]:
            if k not in ("admission", "restart"):
                print(f"| {k} | " + " | ".join(str(r[k]) for r in results) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
