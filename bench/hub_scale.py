"""Hub scale: one real `ai-hub` against many simulated managers (many servicers in a few
processes, a no-op install; tests/fixtures/sim_manager.py), on SQLite and on a private
PostgreSQL side by side, at one or more fleet sizes.

Measures, per size and store: time until the hub sees every host, hub RSS per connected
host, ListHosts latency over the whole fleet (and its hub-side part), HostStatus fan-out,
and for each of `--rollouts` consecutive full staged rollouts (default waves 1, 10%,
50%, 100%) the wall time, the hub's own CPU (from /proc of the hub process), the CPU of
the simulators and of PostgreSQL, how busy the whole machine was, and the hub's RSS
after it (does the memory a rollout takes come back?).

    .venv/bin/python bench/hub_scale.py [--hosts 1000,3000,10000] [--store sqlite,postgresql]
        [--rollouts 5] [--procs N] [--delay 0.5] [--followers 2] [--profile DIR]
        [--settle 1.5] [--idle 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hub_scale_probe import (  # noqa: E402 - after the path setup
    TARGETS,
    Fleet,
    Pace,
    PgCluster,
    hub_side_list_ms,
    measure,
)

HOSTS_PER_PROC = 1250


def table(results: list[dict[str, Any]]) -> str:
    """One column per run (store and size), one row per figure, the target beside it."""
    keys: list[str] = []
    for r in results:
        keys += [k for k in r if k not in keys]
    heads = [f"{r['store']} {r['hosts']:,}" for r in results]
    lines = ["| figure | " + " | ".join(heads) + " | target (10,000) |",
             "|---" * (len(heads) + 2) + "|"]
    for k in keys:
        if k in ("store", "hosts"):
            continue
        cells = [str(r.get(k, "")) for r in results]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {TARGETS.get(k, '')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="500", help="fleet sizes, comma-separated")
    ap.add_argument("--store", default="sqlite", help="sqlite, postgresql, or both "
                    "comma-separated (PostgreSQL: a private server the bench starts)")
    ap.add_argument("--rollouts", type=int, default=1, help="consecutive full rollouts")
    ap.add_argument("--procs", type=int, default=0,
                    help=f"simulator processes (0: one per {HOSTS_PER_PROC} hosts)")
    ap.add_argument("--delay", type=float, default=0.5, help="simulated update time (s)")
    ap.add_argument("--followers", type=int, default=0,
                    help="PostgreSQL only: follower hubs beside the leader (their cost)")
    ap.add_argument("--profile", type=Path, help="py-spy the hub through each "
                    "rollout and a ListHosts burst; collapsed stacks into this directory")
    ap.add_argument("--settle", type=float, default=Pace.settle,
                    help="seconds to let the hub go idle before sampling its RSS")
    ap.add_argument("--idle", type=float, default=Pace.idle,
                    help="seconds over which the idle hub's CPU is measured")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.hosts.split(",") if s.strip()]
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    bad = [s for s in stores if s not in ("sqlite", "postgresql")]
    if bad or not sizes or min(sizes) < 1 or args.rollouts < 1 or not (
            0 <= args.settle <= 600 and 0 < args.idle <= 600):
        ap.error("--store: sqlite and/or postgresql; --hosts: positive counts; "
                 "--rollouts: at least 1; --settle 0-600, --idle above 0 up to 600")
    tmp = Path(tempfile.mkdtemp(prefix="hub-scale-"))
    results: list[dict[str, Any]] = []
    pg: PgCluster | None = None
    stop = _stop_on_signals()
    try:
        if "postgresql" in stores:
            pg = PgCluster(tmp / "pg").start()
        versions = (f"{n}.0" for n in range(2, 10_000))
        for size in sizes:
            procs = args.procs or max(1, -(-size // HOSTS_PER_PROC))
            with Fleet(tmp / f"sims-{size}", size, procs, args.delay) as fleet:
                side = round(hub_side_list_ms(size), 2)
                cold = round(hub_side_list_ms(size, cold=True), 2)
                for store in stores:
                    r = measure(tmp / f"{store}-{size}", fleet, store=store, pg=pg,
                                rollouts=args.rollouts, versions=versions,
                                followers=args.followers if store == "postgresql" else 0,
                                profile=args.profile,
                                pace=Pace(settle=args.settle, idle=args.idle))
                    r["list_hosts_hub_side_ms"] = side
                    r["list_hosts_hub_side_us_per_host"] = round(1000 * side / size, 2)
                    r["list_hosts_hub_side_cold_ms"] = cold
                    r["list_hosts_hub_side_cold_us_per_host"] = round(1000 * cold / size, 2)
                    results.append(r)
                    # each run's figures as it ends: a later run's failure keeps them
                    print(f"# {store} {size}: {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.remove()
        shutil.rmtree(tmp, ignore_errors=True)
        stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(table(results))
    return 0


def _stop_on_signals() -> Any:
    """SIGTERM/SIGINT end the run through the finally blocks (every child stopped)."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM,)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
    return restore


if __name__ == "__main__":
    raise SystemExit(main())
