"""Our ai-manager side by side with supervisord and a real `systemd --user`.

    .venv/bin/python bench/manager_vs_peers.py [--quick] [--rounds N] [--json PATH]
        [--baseline REV] [--event-sinks] [--scrape SECONDS] [--starts-only]

Each round starts every subject afresh, in an order that rotates from round to round,
and measures the same figure on each in turn; the table shows the median over rounds,
the spread (min-max) and the ratio ours/peer. Everything talks to 127.0.0.1 or unix
sockets. supervisord is installed from PyPI into bench/.venv-peers on first use;
systemd is skipped (and says why) where it cannot start. `--baseline REV` adds our
manager as of git revision REV as one more subject (e.g. the code before the event
history: `--baseline events-base`, see docs/BENCHMARKS.md); `--event-sinks` has ours
deliver every event to a JSON lines file as it runs; `--starts-only` takes only the
start -> ready samples (10 a round per subject, with the required stack's floors).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers_supervision
from peers_grpc_floor import GrpcFloor, ImportFloor
from peers_ours import pb
from peers_subjects import Ours, Subject, SupervisordSubject, SystemdSubject
from peers_supervisord import ensure_supervisord
from peers_systemd import unavailable_reason

SLEEPER = ["/bin/sleep", "infinity"]
STUBBORN = ["/bin/sh", "-c", "trap '' TERM; exec /bin/sleep infinity"]
THIS = str(Path(__file__).resolve())
ROOT = Path(THIS).parent.parent

# key: (unit, target for ours, lower is better)
FIGURES: dict[str, tuple[str, str, bool]] = {
    "rss_mb_1": ("MB", "<= 45", True),
    "rss_mb_50": ("MB", "<= 45", True),
    "status_p50_ms_grpc": ("ms", "<= supervisord", True),
    "status_p50_ms_http": ("ms", "<= supervisord", True),
    "status_all50_ms": ("ms", "<= supervisord/5", True),
    "restart_ms": ("ms", "<= 20", True),
    "stop_ignoring_term_s": ("s", "<= 1.1", True),
    "log_lines_per_s": ("lines/s", ">= 200000", False),
    "log_latency_p99_ms": ("ms", "<= 50", True),
    "start_ready_s": ("s", "<= 1.3 x supervisord", True),
    # issue 15 (bench/peers_supervision.py)
    "health_cpu_pct_50": ("%", "< 5 % of a core", True),
    "hung_to_new_pid_s": ("s", "<= 3.2", True),
    "reload_ms_50": ("ms", "< 50", True),
}
EXTRA = ("status_p50_ms_grpc_unix", "status_p99_ms_grpc", "status_p99_ms_http",
         "status_p99_ms_grpc_unix", "status_all50_ms_http", "idle_cpu_pct_50",
         "hung_to_new_pid_max_s", "start_cpu_s")
EXTRA_UNITS = {"idle_cpu_pct_50": ("%", "", True), "hung_to_new_pid_max_s": ("s", "", True),
               "start_cpu_s": ("s", "", True)}
# The floors ours is judged against, measured in the same rounds (JSON key "floors"):
# figure -> (where the floor is recorded, the floor subjects).
FLOORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "status_p50_ms_grpc": ("status_p50_ms_grpc_floor", ("bare grpc.aio", "bare grpc.server")),
    "rss_mb_1": ("rss_mb_floor", ("required stack",)),
    "start_ready_s": ("start_ready_s_floor", ("required stack", "required imports")),
}


class Results:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}

    def add(self, figure: str, subject: str, value: float) -> None:
        self.values.setdefault(figure, {}).setdefault(subject, []).append(value)

    def median(self, figure: str, subject: str) -> float | None:
        vals = self.values.get(figure, {}).get(subject)
        return statistics.median(vals) if vals else None

    def spread(self, figure: str, subject: str) -> tuple[float, float] | None:
        vals = self.values.get(figure, {}).get(subject)
        return (min(vals), max(vals)) if vals else None

    def as_json(self) -> dict[str, Any]:
        """Each figure's medians and ours/supervisord; then "floors": for a figure with a
        floor, ours and each floor's median and ours/floor (e.g. the gRPC status p50 of
        bare grpcio servers, the RSS of a process holding only the required stack)."""
        out: dict[str, Any] = {}
        for key in FIGURES:
            ours, sup = self.median(key, "ours"), self.median(key, "supervisord")
            entry: dict[str, float | None] = {"ours": ours, "supervisord": sup}
            if (sd := self.median(key, "systemd")) is not None:
                entry["systemd"] = sd
            if (base := self.median(key, "baseline")) is not None:
                entry["baseline"] = base
            entry["ratio"] = _ratio(ours, sup)
            out[key] = entry
        floors: dict[str, dict[str, float | None]] = {}
        for key, (recorded, subjects) in FLOORS.items():
            ours = self.median(key, "ours")
            floor: dict[str, float | None] = {"ours": ours}
            for subject in subjects:
                floor[subject] = self.median(recorded, subject)
            for subject in subjects:
                floor[f"ours/{subject}"] = _ratio(ours, floor[subject])
            floors[key] = floor
        out["floors"] = floors
        return out


def _ratio(ours: float | None, other: float | None) -> float | None:
    return ours / other if ours is not None and other else None


# ---- small measuring tools ------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """CPU seconds a process's live threads ran so far (/proc/PID/task/*/schedstat:
    nanoseconds, where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def children(pid: int) -> set[int]:
    """Live (non-zombie) children of a process, across all its threads."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.update(int(c) for c in text.split())
    return {c for c in found if alive(c)}


def alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def running_sleep(pid: int) -> bool:
    """The pid is a live /bin/sleep: forked and exec'd."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return comm == "sleep" and alive(pid)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := pred():
            return got
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout}s: {what}")


def timed_calls(call: Callable[[], Any], n: int, warm: int = 20) -> list[float]:
    """Milliseconds of each of n sequential calls (after a short warm-up)."""
    for _ in range(min(warm, n)):
        call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the benchmark --------------------------------------------------------------------

def svc(name: str, argv: list[str], *, start_secs: int = 0, stop_timeout: int = 1,
        autostart: bool = True, once: bool = False) -> dict[str, Any]:
    return {"name": name, "argv": argv, "start_secs": start_secs,
            "stop_timeout": stop_timeout, "autostart": autostart, "once": once}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.verbose = args.verbose
        self.scrape = args.scrape
        # (rounds, status calls, all-50 calls, kills, settle s, burst lines, paced s,
        #  CPU window s, hangs, extra starts)
        sizes = ((1, 60, 10, 2, 0.3, 20_000, 0.5, 1.0, 1, 1) if args.smoke
                 else (2, 400, 40, 5, 0.5, 200_000, 2.0, 3.0, 2, 5) if args.quick
                 else (5, 2000, 200, 20, 2.0, 1_000_000, 5.0, 10.0, 3, 10))
        (rounds, self.calls, self.all_calls, self.kills, self.settle, self.log_lines,
         self.latency_secs, self.cpu_window, self.hangs, self.starts) = sizes
        self.rounds = args.rounds or rounds
        self.starts_only = args.starts_only
        self.results = Results()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
        self.subjects = ["ours", "supervisord"]
        self.systemd_skip = "disabled (--no-systemd)" if args.no_systemd else unavailable_reason()
        if not self.systemd_skip:
            self.subjects.append("systemd")
        self.supervisord = ensure_supervisord()
        self.baseline = checkout(args.baseline, self.tmp) if args.baseline else None
        if self.baseline is not None:
            self.subjects.insert(1, "baseline")
        self.event_sinks = args.event_sinks
        # Byte-compile our code as an installed package has it (pip compiles on install).
        subprocess.run([sys.executable, "-m", "compileall", "-q", "manager", "backendai"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        self.n = 0

    def make(self, kind: str, services: list[dict[str, Any]]) -> Subject:
        self.n += 1
        root = self.tmp / f"{self.n:03d}-{kind}"
        root.mkdir()
        if kind in ("ours", "baseline"):
            ours = Ours(root, services, scrape_every=self.scrape)
            if kind == "baseline" and self.baseline is not None:
                ours.m.code_root = self.baseline
            elif self.event_sinks:
                ours.m.extra["event_sinks"] = [{"type": "jsonl",
                                                "path": str(root / "events.jsonl")}]
            return ours
        if kind == "supervisord":
            return SupervisordSubject(root, services, self.supervisord)
        return SystemdSubject(root, services)

    @contextmanager
    def running(self, kind: str, services: list[dict[str, Any]]) -> Iterator[tuple[Subject, float]]:
        subject = self.make(kind, services)
        try:
            took = subject.start()
            for s in services:
                if s["autostart"] and not s.get("once"):
                    wait_for(functools.partial(subject.running_pid, s["name"]), 20,
                             f"{kind}: {s['name']} running", 0.005)
            yield subject, took
        finally:
            subject.close()

    def order(self, rnd: int) -> list[str]:
        k = rnd % len(self.subjects)
        return self.subjects[k:] + self.subjects[:k]

    def run(self) -> Results:
        for rnd in range(self.rounds):
            t0 = time.monotonic()
            t1 = time.monotonic()
            self.start_ready(rnd)
            self.note(f"start_ready: {time.monotonic() - t1:.1f}s")
            if self.starts_only:
                print(f"round {rnd + 1}/{self.rounds} (starts only) done in "
                      f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
                continue
            for together in (self.one_service, self.fifty_services):
                t1 = time.monotonic()
                together(rnd)
                self.note(f"{together.__name__}: {time.monotonic() - t1:.1f}s")
            for kind in self.order(rnd):
                t1 = time.monotonic()
                self.stop_ignoring_term(kind)
                self.note(f"stop_ignoring_term {kind}: {time.monotonic() - t1:.1f}s")
            t1 = time.monotonic()
            self.logs()
            self.note(f"logs ours: {time.monotonic() - t1:.1f}s")
            t1 = time.monotonic()
            self.supervision(rnd)
            self.note(f"supervision: {time.monotonic() - t1:.1f}s")
            print(f"round {rnd + 1}/{self.rounds} done in {time.monotonic() - t0:.1f}s",
                  file=sys.stderr)
        return self.results

    def note(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr)

    @contextmanager
    def all_running(self, rnd: int, services: list[dict[str, Any]]
                    ) -> Iterator[dict[str, tuple[Subject, float]]]:
        """Every subject up at once (started one after the other, in this round's order),
        so that interleaved measurements see the same machine load."""
        with ExitStack() as stack:
            yield {kind: stack.enter_context(self.running(kind, services))
                   for kind in self.order(rnd)}

    def interleaved(self, calls: dict[tuple[str, str], Callable[[], Any]], total: int,
                    chunk: int) -> dict[tuple[str, str], list[float]]:
        """Milliseconds per call, taking turns in chunks (systemd's CLI: fewer per turn)."""
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        for call in calls.values():
            timed_calls(call, 5)  # warm up connections
        keys = list(calls)
        for turn in range(max(1, total // chunk)):
            k = turn % len(keys)
            for key in keys[k:] + keys[:k]:
                n = chunk if key[0] != "systemd" else max(1, chunk // 20)
                samples[key] += timed_calls(calls[key], n, warm=0)
        return samples

    def supervision(self, rnd: int) -> None:
        """Issue 15: health check cost, hung service -> new pid, reload of 50 (ours and
        supervisord's `update`)."""
        self.n += 1
        root = self.tmp / f"{self.n:03d}-supervision"
        root.mkdir()
        checked, idle = peers_supervision.health_cpu(root / "cpu", self.cpu_window,
                                                     self.settle)
        self.results.add("health_cpu_pct_50", "ours", checked)
        self.results.add("idle_cpu_pct_50", "ours", idle)
        hung = peers_supervision.hung_to_new_pid(root / "hung", self.hangs)
        self.results.add("hung_to_new_pid_s", "ours", statistics.median(hung))
        self.results.add("hung_to_new_pid_max_s", "ours", max(hung))
        for kind in self.order(rnd):
            if kind == "ours":
                took = peers_supervision.reload_ours(root / "reload-ours")
            elif kind == "supervisord":
                took = peers_supervision.reload_supervisord(root / "reload-supervisord",
                                                            self.supervisord)
            else:
                continue  # systemd: no config reload of this kind
            self.results.add("reload_ms_50", kind, took)

    def start_ready(self, rnd: int) -> None:
        """More start -> ready samples than the one per round of one_service: each
        subject (and the required stack's floor) started and closed in turn, with the
        daemon's CPU time (user + system) until ready beside the wall time."""
        for _ in range(self.starts):
            for kind in self.order(rnd):
                subject = self.make(kind, [svc("svc0", SLEEPER)])
                try:
                    self.results.add("start_ready_s", kind, subject.start())
                    if kind != "systemd":  # its pid is systemd's own, started earlier
                        self.results.add("start_cpu_s", kind, cpu_s(subject.pid))
                finally:
                    subject.close()
            floor = GrpcFloor(stack=True)
            try:
                floor.start()
                assert floor.proc is not None
                self.results.add("start_ready_s_floor", "required stack", floor.took)
                self.results.add("start_cpu_s_floor", "required stack", cpu_s(floor.proc.pid))
            finally:
                floor.close()
            imports = ImportFloor()
            imports.run()
            self.results.add("start_ready_s_floor", "required imports", imports.took)
            self.results.add("start_cpu_s_floor", "required imports", imports.cpu)

    def one_service(self, rnd: int) -> None:
        with self.all_running(rnd, [svc("svc0", SLEEPER)]) as up:
            for kind, (_, took) in up.items():
                self.results.add("start_ready_s", kind, took)
            time.sleep(self.settle)
            for kind, (subject, _) in up.items():
                self.results.add("rss_mb_1", kind, rss_mb(subject.pid))
            stack = GrpcFloor(stack=True)
            try:
                stack.start()
                time.sleep(self.settle)
                assert stack.proc is not None
                self.results.add("rss_mb_floor", "required stack", rss_mb(stack.proc.pid))
                self.results.add("start_ready_s_floor", "required stack", stack.took)
            finally:
                stack.close()
            calls = {(kind, transport): call for kind, (subject, _) in up.items()
                     for transport, call in subject.status_calls("svc0").items()}
            floors = {"bare grpc.aio": GrpcFloor(), "bare grpc.server": GrpcFloor(threads=True)}
            try:
                req = pb.StatusRequest(service="svc0")
                for name, floor in floors.items():
                    stub = floor.start()
                    calls[name, "grpc"] = lambda stub=stub: stub.Status(req, timeout=30)
                samples = self.interleaved(calls, self.calls, 50)
            finally:
                for floor in floors.values():
                    floor.close()
            for (kind, transport), ms in samples.items():
                if kind in floors:
                    self.results.add("status_p50_ms_grpc_floor", kind, pct(ms, 0.5))
                    continue
                for key, q in (("status_p50_ms", 0.5), ("status_p99_ms", 0.99)):
                    # a peer's one status call stands against both of our transports
                    for name in ([f"{key}_{transport}"] if kind in ("ours", "baseline")
                                 else [f"{key}_grpc", f"{key}_http", f"{key}_grpc_unix"]):
                        self.results.add(name, kind, pct(ms, q))
            for kind, (subject, _) in up.items():
                self.results.add("restart_ms", kind, statistics.median(self.restarts(subject)))

    def restarts(self, subject: Subject) -> list[float]:
        """kill -9 of the service -> a new live child of the daemon, in milliseconds."""
        out = []
        for _ in range(self.kills):
            old = wait_for(lambda: subject.running_pid("svc0"), 10, "svc0 running", 0.002)
            others = children(subject.pid) - {old}
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            known = others | {old}

            def spawned(known: set[int] = known) -> set[int]:
                return {c for c in children(subject.pid) - known if running_sleep(c)}

            new = wait_for(spawned, 10, "a new service pid", 0.0002)
            out.append((time.perf_counter() - t0) * 1000)

            def reported(new: set[int] = new) -> bool:
                return subject.running_pid("svc0") in new

            wait_for(reported, 10, "new pid reported", 0.002)
            time.sleep(0.05)
        return out

    def fifty_services(self, rnd: int) -> None:
        services = [svc(f"svc{i:02d}", SLEEPER) for i in range(50)]
        with self.all_running(rnd, services) as up:
            time.sleep(self.settle)
            for kind, (subject, _) in up.items():
                self.results.add("rss_mb_50", kind, rss_mb(subject.pid))
            calls = {(kind, transport): call for kind, (subject, _) in up.items()
                     for transport, call in subject.status_all_calls().items()}
            for (kind, transport), ms in self.interleaved(calls, self.all_calls, 10).items():
                name = "status_all50_ms_http" if transport == "http" else "status_all50_ms"
                self.results.add(name, kind, pct(ms, 0.5))

    def stop_ignoring_term(self, kind: str) -> None:
        """Stop of a service that ignores SIGTERM with a 1 s stop timeout: until gone."""
        with self.running(kind, [svc("stubborn", STUBBORN, stop_timeout=1)]) as (subject, _):
            pid = subject.running_pid("stubborn")
            # Not before the shell has set SIGTERM to ignored and exec'd sleep.
            wait_for(lambda: running_sleep(pid), 10, "stubborn exec'd", 0.002)
            pgid = os.getpgid(pid)
            t0 = time.perf_counter()
            subject.stop_service("stubborn")
            wait_for(lambda: not alive(pid), 15, "stubborn gone", 0.0005)
            took = time.perf_counter() - t0
            survivors = [p for p in _pids() if alive(p) and _pgid(p) == pgid]
            if survivors:
                raise RuntimeError(f"{kind}: processes survived the stop: {survivors}")
            self.results.add("stop_ignoring_term_s", kind, took)

    def logs(self) -> None:
        """Ours only (the peers have no streaming log API): one StreamLogs client."""
        go = self.tmp / f"go-{self.n}"
        services = [
            svc("burst", [sys.executable, THIS, "--as-writer", "burst", str(self.log_lines),
                          str(go) + ".burst"], autostart=False, once=True),
            svc("paced", [sys.executable, THIS, "--as-writer", "paced",
                          str(int(self.latency_secs * 1000)), str(go) + ".paced"],
                autostart=False, once=True),
        ]
        with self.running("ours", services) as (subject, _):
            assert isinstance(subject, Ours)
            rate = self.follow(subject, "burst", Path(str(go) + ".burst"), self.log_lines)
            self.results.add("log_lines_per_s", "ours", rate)
            lat = self.follow(subject, "paced", Path(str(go) + ".paced"),
                              int(self.latency_secs * 1000), stamped=True)
            self.results.add("log_latency_p99_ms", "ours", lat)

    def follow(self, subject: Ours, name: str, go: Path, lines: int,
               stamped: bool = False) -> float:
        subject.start_service(name)
        stream = subject.m.grpc().StreamLogs(pb.StreamLogsRequest(service=name, tail_lines=1),
                                             timeout=120)
        first = next(stream)  # the writer's "ready" line: the stream is following
        if first.lines[-1:] != ["ready"]:
            raise RuntimeError(f"expected the writer's ready line, got {first.lines!r}")
        delays: list[float] = []
        count = 0
        t0 = time.perf_counter()
        go.touch()
        for batch in stream:
            now = time.time()
            if stamped:
                delays.extend((now - float(line.split()[1])) * 1000 for line in batch.lines)
            count += len(batch.lines)
            if count >= lines:
                break
        took = time.perf_counter() - t0
        stream.cancel()
        return pct(delays, 0.99) if stamped else lines / took


def checkout(rev: str, tmp: Path) -> Path:
    """Our code as of git revision `rev` (`events-base`: the parent of the commit that
    added the event history), unpacked beside the run."""
    if rev == "events-base":
        added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--",
                                "backendai/events/log.py"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
        rev = f"{added[-1]}^"
    dest = tmp / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", rev, "backendai", "manager"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "manager", "backendai"],
                   cwd=dest, check=True, stdout=subprocess.DEVNULL)
    return dest


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def writer(mode: str, count: int, go: Path) -> None:
    """The service side of the log figures: say "ready", wait for go, then write."""
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while not go.exists():
        time.sleep(0.001)
    if mode == "burst":
        block = "".join(f"log line {i:07d} abcdefghijklmnopqrstuvwxyz\n" for i in range(1000))
        for _ in range(count // 1000):
            out.write(block)
        out.flush()
    else:  # paced: 1,000 stamped lines per second, each flushed at once
        t0 = time.monotonic()
        for i in range(count):
            delay = t0 + i / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            out.write(f"stamp {time.time():.6f} {i}\n")
            out.flush()
    time.sleep(3600)


# ---- output ----------------------------------------------------------------------------

def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if v < 1 else f"{v:.2f}"


def cell(res: Results, key: str, subject: str) -> str:
    med, spread = res.median(key, subject), res.spread(key, subject)
    if med is None or spread is None:
        return "-"
    return f"{fmt(med)} ({fmt(spread[0])}-{fmt(spread[1])})"


def table(res: Results, subjects: list[str]) -> str:
    peers = [s for s in subjects if s != "ours"]
    head = ["figure", *(f"{s} median (min-max)" for s in subjects),
            *(f"ours/{p}" for p in peers), "target (ours)"]
    rows = [head, ["---"] * len(head)]
    for key in (*FIGURES, *EXTRA):
        unit, target, _ = FIGURES.get(key, EXTRA_UNITS.get(key, ("ms", "", True)))
        ours = res.median(key, "ours")
        ratios = []
        for p in peers:
            peer = res.median(key, p)
            ratios.append(f"{ours / peer:.2f}" if ours is not None and peer else "-")
        rows.append([f"{key} ({unit})", *(cell(res, key, s) for s in subjects), *ratios,
                     target])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 90 s)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 5, quick 2)")
    parser.add_argument("--json", type=Path, help="write the medians here as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="time each step")
    parser.add_argument("--no-systemd", action="store_true", help="skip systemd --user")
    parser.add_argument("--baseline", default="", metavar="REV",
                        help="also run our manager as of this git revision (events-base: "
                             "just before the event history)")
    parser.add_argument("--event-sinks", action="store_true",
                        help="ours delivers its events to a JSON lines file")
    parser.add_argument("--scrape", type=float, default=0.0, metavar="SECONDS",
                        help="GET our managers' /metrics this often, as Prometheus would")
    parser.add_argument("--starts-only", action="store_true",
                        help="only the start -> ready samples and their floors (no table)")
    parser.add_argument("--smoke", action="store_true",
                        help=argparse.SUPPRESS)  # one tiny round: the tests' check of the script
    parser.add_argument("--as-writer", nargs=3, metavar=("MODE", "COUNT", "GO"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_writer:
        writer(args.as_writer[0], int(args.as_writer[1]), Path(args.as_writer[2]))
        return 0
    t0 = time.monotonic()
    bench = Bench(args)
    if bench.systemd_skip:
        print(f"systemd: skipped: {bench.systemd_skip}", file=sys.stderr)
    try:
        res = bench.run()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if not args.starts_only:
        print(table(res, bench.subjects))
    else:
        for key in ("start_ready_s", "start_cpu_s"):
            print(key, *(f"{s} {cell(res, key, s)};" for s in bench.subjects
                         if res.median(key, s) is not None))
    print(f"\nstatus_p50_ms_grpc of bare servers (same proto, constant reply, interleaved): "
          f"grpc.aio {cell(res, 'status_p50_ms_grpc_floor', 'bare grpc.aio')} ms, "
          f"thread-pool grpc.server "
          f"{cell(res, 'status_p50_ms_grpc_floor', 'bare grpc.server')} ms")
    print(f"RSS of the required stack alone (python, asyncio, grpc.aio server with health and "
          f"reflection, structlog, psutil, h11, sqlite3): "
          f"{cell(res, 'rss_mb_floor', 'required stack')} MB; its start -> serving "
          f"{cell(res, 'start_ready_s_floor', 'required stack')} s, CPU until then "
          f"{cell(res, 'start_cpu_s_floor', 'required stack')} s")
    print(f"Start floor: a process that only imports grpc, the generated stubs, structlog "
          f"and psutil: {cell(res, 'start_ready_s_floor', 'required imports')} s from spawn, "
          f"CPU {cell(res, 'start_cpu_s_floor', 'required imports')} s; against "
          f"supervisord's start -> ready {cell(res, 'start_ready_s', 'supervisord')} s, "
          f"CPU {cell(res, 'start_cpu_s', 'supervisord')} s")
    print(f"\n{bench.rounds} rounds, {bench.calls} status calls per transport, "
          f"{bench.kills} kills per round; {time.monotonic() - t0:.0f}s total"
          + (f"; our managers scraped every {args.scrape:g}s" if args.scrape else ""))
    if args.json:
        args.json.write_text(json.dumps(res.as_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
