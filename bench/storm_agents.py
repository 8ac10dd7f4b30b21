"""Many simulated hosts' agents (and their managers' `[hub]` registration) in one process,
for bench/hub_storm.py: each runs the real registration loop (agent/registration.py,
manager/hub_registration.py: full jitter, the hub's "later" waited out), and all of them
share a few channels to the hub (a process may hold 20,000 files here, and a hub with
10,000 manager streams has no room for 10,000 agent sockets: the hub's per-call work is
the same, its connection count is not).

    python bench/storm_agents.py --hub ADDR --hosts FILE --start 0 --count 2500
        [--channels 16] [--managers] [--register-interval 30] --ready-file F --status-file S

FILE: JSON {name: manager address}. The status file (rewritten every second) holds how
many agents are registered and how often each loop event happened (the events
themselves are counted, not printed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import backendai.hub_endpoints as endpoints  # noqa: E402 - after the path setup
from agent.config import AgentConfig  # noqa: E402
from agent.registration import Registration  # noqa: E402
from backendai.daemon_support import write_ready_file  # noqa: E402
from backendai.v1 import agent_pb2 as apb  # noqa: E402
from manager.config import HubLink  # noqa: E402
from manager.hub_registration import HubRegistration  # noqa: E402

EVENTS: collections.Counter[str] = collections.Counter()


def count_events(logger: Any, name: str, event: dict[str, Any]) -> Any:
    EVENTS[event.get("event", "?")] += 1
    raise structlog.DropEvent


class SharedChannel:
    """One of the process's few channels to the hub, handed to many loops: their
    `close()` (a loop moving to another hub) leaves it open for the others."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    async def close(self, grace: float | None = None) -> None:
        return None


async def main(args: argparse.Namespace, hosts: dict[str, str]) -> None:
    structlog.configure(processors=[count_events])
    names = sorted(hosts)[args.start:args.start + args.count]
    pool: dict[str, list[SharedChannel]] = {}
    turn = itertools.count()

    def shared(address: str, **kwargs: Any) -> Any:
        if address not in pool:
            pool[address] = [SharedChannel(real_open(address, **kwargs))
                             for _ in range(args.channels)]
        return pool[address][next(turn) % args.channels]

    real_open = endpoints.open_channel
    endpoints.open_channel = shared  # type: ignore[assignment]  # the bench's one patch
    facts = apb.HostFacts(hostname="sim", cpu_count=2)

    async def get_facts() -> apb.HostFacts:
        return facts

    agents = [Registration(AgentConfig(name=n, hub_address=(args.hub,), manager_address=hosts[n],
                                       reconnect_max=args.reconnect_max),
                           token=None, version="1.0", facts=get_facts, started=time.time())
              for n in names]
    managers = [HubRegistration(HubLink(name=n, address=args.hub,
                                        register_interval=args.register_interval),
                                token=None, manager_address=lambda a=hosts[n]: a,
                                version=lambda: "1.0")
                for n in names] if args.managers else []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(r.run()) for r in [*agents, *managers]]
    write_ready_file(Path(args.ready_file), {"pid": os.getpid(), "agents": len(agents),
                                              "managers": len(managers)})
    status = Path(args.status_file)
    while not stop.is_set():
        tmp = status.with_suffix(".tmp")
        tmp.write_text(json.dumps({"registered": sum(a.registered for a in agents),
                                   "managers_registered": sum(m.registered for m in managers),
                                   "events": dict(EVENTS), "at": time.time()}))
        tmp.replace(status)
        try:
            async with asyncio.timeout(1.0):
                await stop.wait()
        except TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hub", required=True)
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--managers", action="store_true")
    ap.add_argument("--register-interval", type=float, default=30.0)
    ap.add_argument("--reconnect-max", type=float, default=30.0)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--status-file", required=True)
    parsed = ap.parse_args()
    asyncio.run(main(parsed, json.loads(Path(parsed.hosts).read_text())))
