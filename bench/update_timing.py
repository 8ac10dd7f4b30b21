"""Update wall time split by step for a large release, and the service's downtime window.

    .venv/bin/python bench/update_timing.py [--mb 50] [--runs 3]

Builds two releases with `aictl release build` (the second carries MB of incompressible
data), serves them from a real HTTP store on 127.0.0.1, starts a real ai-manager with the
HTTP health probe (min_healthy_time 1 s), updates 1.0.0 -> 1.1.0 (then back and forth)
and reads the step timings from WatchUpdate. Downtime = `stop` started -> `health` ok
(the old service stops answering at stop; the new one answers before health ends).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.v1 import manager_pb2 as pb  # noqa: E402
from tests.conftest import ManagerProc, assert_eventually  # noqa: E402
from tests.update_support import (  # noqa: E402
    StoreServer,
    build_release,
    install,
    make_source,
    reserved_port,
    update_service,
    watch_op,
)

STEPS = ("download", "verify", "stage", "stop", "switch", "start", "health", "commit")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s, reserved_port() as port:
        tmp = Path(tmp_s)
        src, out, store = make_source(tmp), tmp / "out", tmp / "store"
        t0 = time.monotonic()
        build_release(src, out, "1.0.0", blob_bytes=args.mb << 20)
        build_release(src, out, "1.1.0", blob_bytes=args.mb << 20)
        build_s = (time.monotonic() - t0) / 2
        size = (out / "1.1.0" / "agent-1.1.0.tar.gz").stat().st_size
        shutil.copytree(out, store)
        server = StoreServer(store)
        root = tmp / "opt"
        install(root, out / "1.0.0" / "agent-1.0.0.tar.gz", "1.0.0")
        svc = update_service(root, f"{server.url}/{{version}}/agent-{{version}}.tar.gz", port,
                             min_healthy_time=1.0, healthy_deadline=30.0, keep_releases=3,
                             download_timeout=30.0)
        (tmp / "m").mkdir()
        m = ManagerProc(tmp / "m", [svc])
        try:
            m.start()
            assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING, 20)
            rows: dict[str, list[float]] = {s: [] for s in (*STEPS, "total", "downtime")}
            versions = ["1.1.0", "1.0.0"]
            for i in range(args.runs):
                v = versions[i % 2]
                op = m.stub().Update(pb.UpdateRequest(version=v), timeout=10).operation_id
                events = watch_op(m, op, timeout=300)
                assert events[-1].outcome == "succeeded", events[-1].message
                done = {e.step: e for e in events if e.status == "ok"}
                began = {e.step: e for e in events if e.status == "started"}
                for s in STEPS:
                    rows[s].append(done[s].elapsed_seconds)
                rows["total"].append(events[-1].elapsed_seconds)
                rows["downtime"].append(done["health"].at_unix - began["stop"].at_unix)
        finally:
            m.stop()
            m.cleanup()
            server.close()
    print(f"release: {size / 1e6:.1f} MB tar.gz ({args.mb} MiB incompressible payload); "
          f"aictl release build: {build_s:.2f} s per version; runs: {args.runs}")
    print()
    print("| step | median s | min s | max s |")
    print("|---|---|---|---|")
    for s, vals in rows.items():
        print(f"| {s} | {statistics.median(vals):.3f} | {min(vals):.3f} | {max(vals):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
