"""The event history's cost: per event written, and per event delivered by each sink.

1. Write (in-process, a real SQLite file in WAL mode on this disk, as the manager has
   it): events queued and committed at the end of the loop turn, N per turn (what a
   restart or a burst produces); one event riding in a state write's transaction (the
   services table's desired-state write) against the same write with no event log; and,
   for reference, the choice not made: each event its own transaction with
   synchronous=FULL.
2. Delivery (in-process log and sink, the receiver a separate process on 127.0.0.1):
   a backlog of events pushed through a jsonl file sink, a webhook sink and an
   OpenSearch `_bulk` sink; microseconds per event from the first read to the cursor at
   the end.

    .venv/bin/python bench/events.py [--quick] [--json PATH]

The crash-repair figure and status p50 with events on, beside the same manager without
them, are bench/manager_vs_peers.py's (`--baseline`, `--event-sinks`).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.events.config import SinkConfig  # noqa: E402 - after the path set-up
from backendai.events.log import EventLog, Retention  # noqa: E402
from backendai.events.model import make_event  # noqa: E402
from backendai.events.sinks.runner import SinkRunner, make_sink  # noqa: E402
from manager.statestore import ServiceRecord, StateStore  # noqa: E402

FIELDS = {"state": "BACKOFF", "previous": "RUNNING", "pid": 12345, "exit_code": 1,
          "reason": "exited with code 1; retrying in 0.50s", "restarts": 3}


def per_event_us(seconds: float, events: int) -> float:
    return seconds / events * 1e6


# ---- 1. write ---------------------------------------------------------------------------

async def queued(tmp: Path, per_turn: int, total: int) -> float:
    store = StateStore(tmp / f"q{per_turn}.db")
    log = EventLog(store.event_store(), retention=Retention(10_000_000, 0))
    store.attach_events(log)
    await log.open()
    runner = asyncio.create_task(log.run())
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    for _ in range(total // per_turn):
        for _ in range(per_turn):
            log.emit("service.state", "service/web", "RUNNING -> BACKOFF: exited with code 1",
                     FIELDS)
        await asyncio.sleep(0)  # the end of the loop turn: the flusher commits the batch
        await asyncio.sleep(0)
    await log.flush()
    took = time.perf_counter() - t0
    assert log.last_id == total, log.last_id
    runner.cancel()
    await log.close()
    store.close()
    return per_event_us(took, total)


def state_writes(tmp: Path, n: int) -> tuple[float, float]:
    """Microseconds per desired-state write (each a change, so each carries an event when
    an event log is attached): without, and with one; taken in alternating chunks so
    both see the same disk."""
    plain, with_log = StateStore(tmp / "plain.db"), StateStore(tmp / "events.db")
    with_log.attach_events(EventLog(with_log.event_store()))
    took = {id(plain): 0.0, id(with_log): 0.0}
    for chunk in range(max(1, n // 50)):
        for store in (plain, with_log) if chunk % 2 else (with_log, plain):
            t0 = time.perf_counter()
            for i in range(50):
                store.save_service(ServiceRecord("web", desired="running" if i % 2
                                                 else "stopped"))
            took[id(store)] += time.perf_counter() - t0
    done = max(1, n // 50) * 50
    plain.close()
    with_log.close()
    return per_event_us(took[id(plain)], done), per_event_us(took[id(with_log)], done)


def one_per_transaction_full(tmp: Path, n: int) -> float:
    store = StateStore(tmp / "full.db")
    events = store.event_store()
    ev = make_event("service.state", "service/web", "x", FIELDS, at=time.time())
    from backendai.events.sqlite_store import insert_events  # noqa: PLC0415

    t0 = time.perf_counter()
    for _ in range(n):
        with store.transaction():
            insert_events(events.db, [ev])
    took = time.perf_counter() - t0
    store.close()
    return per_event_us(took, n)


# ---- 2. delivery --------------------------------------------------------------------------

def receiver_main(port_file: str) -> None:
    """A webhook and `_bulk` receiver in its own process (parses every body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.endswith("/_bulk"):
                lines = body.split(b"\n")[:-1]
                items = [{"index": {"_id": json.loads(a)["index"]["_id"], "status": 201}}
                         for a in lines[0::2]]
                out = json.dumps({"took": 1, "errors": False, "items": items}).encode()
            else:
                json.loads(body)
                out = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


async def delivered(tmp: Path, kind: str, total: int, port: int) -> float:
    store = StateStore(tmp / f"d-{kind}.db")
    log = EventLog(store.event_store(), retention=Retention(10_000_000, 0), source="bench/m")
    store.attach_events(log)
    await log.open()
    for i in range(total):
        log.emit("service.state", f"service/s{i % 50}", "RUNNING -> BACKOFF: exited", FIELDS)
        if i % 1000 == 999:
            await log.flush()  # as the loop turns would (the queue holds 10,000 at most)
    await log.flush()
    cfg = {"jsonl": SinkConfig("jsonl", "f", path=str(tmp / "events.jsonl")),
           "webhook": SinkConfig("webhook", "w", url=f"http://127.0.0.1:{port}/hook"),
           "opensearch": SinkConfig("opensearch", "o", url=f"http://127.0.0.1:{port}")}[kind]
    sink = make_sink(cfg, source="bench/m")
    deliver = sink.deliver
    done = asyncio.Event()

    async def counted(events: Any) -> int:
        n = await deliver(events)
        if events[n - 1].id >= total:
            done.set()
        return n

    sink.deliver = counted  # type: ignore[method-assign]
    runner = SinkRunner(log, sink, cfg)
    t0 = time.perf_counter()
    task = asyncio.create_task(runner.run())
    await done.wait()
    took = time.perf_counter() - t0
    task.cancel()
    await log.close()
    store.close()
    return per_event_us(took, total)


# ---- main ---------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (a few seconds)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--as-receiver", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_receiver:
        receiver_main(args.as_receiver)
        return 0
    n = 2000 if args.quick else 20_000
    writes = 300 if args.quick else 2000
    rounds = 1 if args.quick else 3
    figures: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    tmp = Path(tempfile.mkdtemp(prefix="bench-events-", dir=os.environ.get("BENCH_DIR")))
    port_file = tmp / "port"
    receiver = subprocess.Popen([sys.executable, __file__, "--as-receiver", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.01)
        port = int(port_file.read_text())
        for rnd in range(rounds):
            work = tmp / f"r{rnd}"
            work.mkdir()
            for per_turn in (1, 10, 100):
                add(f"write_queued_{per_turn}_per_turn_us", asyncio.run(
                    queued(work, per_turn, n)))
            without, with_event = state_writes(work, writes)
            add("state_write_without_events_us", without)
            add("state_write_with_its_event_us", with_event)
            add("event_own_tx_sync_full_us", one_per_transaction_full(work, writes))
            for kind in ("jsonl", "webhook", "opensearch"):
                add(f"deliver_{kind}_us", asyncio.run(delivered(work, kind, n, port)))
    finally:
        receiver.kill()
        receiver.wait()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    print("| figure | microseconds per event (median of "
          f"{rounds} round{'s' if rounds > 1 else ''}) |")
    print("|---|---|")
    for key, value in medians.items():
        print(f"| {key} | {value:.1f} |")
    extra = medians["state_write_with_its_event_us"] - medians["state_write_without_events_us"]
    print(f"\nan event in a state write's transaction adds {extra:.1f} us to that write; "
          f"{n} events per delivery figure, {writes} state writes; disk: {tmp}")
    if args.json:
        args.json.write_text(json.dumps(medians, indent=2) + "\n")
    import shutil  # noqa: PLC0415

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
