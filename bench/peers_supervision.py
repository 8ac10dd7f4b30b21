"""Issue 15's figures for bench/manager_vs_peers.py: the cost of health checks, the time
from a hung service to its new pid, and a config reload where one of 50 services
changed (ours next to supervisorctl's `update`: reloadConfig, then stop, remove and add
the changed group). Each function returns its figure; the caller records it.

Health checks need something to answer them: `HealthTarget` is one helper process (not
supervised) answering GET /health/NAME on one port, so the 50 checked services can be
`/bin/sleep` and only the manager's side is measured.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from peers_ours import OurManager, pb
from peers_supervisord import Program, Supervisord

ROOT = Path(__file__).resolve().parent.parent
SERVICE = str(ROOT / "tests" / "fixtures" / "service.py")
SLEEPER = ["/bin/sleep", "infinity"]

TARGET = r'''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
'''


@contextlib.contextmanager
def health_target() -> Iterator[int]:
    """A helper answering every GET with 200 "ok"; yields its port."""
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port held bound with SO_REUSEPORT (tests/fixtures/service.py binds it too)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(pred: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := pred():
            return got
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout}s: {what}")


def base_service(name: str, argv: list[str], root: Path, **over: Any) -> dict[str, Any]:
    return {"name": name, "command": argv, "start_secs": 0.0, "stop_timeout": 2.0,
            "crash_loop_window": 0.0, "crash_loop_max": 0, "working_directory": str(root),
            **over}


def health_cpu(root: Path, window: float, settle: float) -> tuple[float, float]:
    """The manager's CPU (% of one core) with 50 services each checked every second over
    HTTP, and the same manager's with the checks off (both over `window` seconds)."""
    out = []
    with health_target() as port:
        for checked in (True, False):
            services = [base_service(
                f"svc{i:02d}", SLEEPER, root,
                **({"health": {"http": f"http://127.0.0.1:{port}/health/svc{i:02d}",
                               "interval": 1.0, "timeout": 0.5}} if checked else {}))
                for i in range(50)]
            m = OurManager(root / ("checked" if checked else "unchecked"), services)
            try:
                m.start()
                if checked:
                    wait_for(lambda m=m: all(s.health == "healthy" for s in m.grpc().ListServices(
                        pb.ListServicesRequest(), timeout=10).services), 30, "50 healthy", 0.1)
                time.sleep(settle)
                c0, t0 = cpu_seconds(m.pid), time.monotonic()
                time.sleep(window)
                c1, t1 = cpu_seconds(m.pid), time.monotonic()
                out.append(100.0 * (c1 - c0) / (t1 - t0))
                if checked:
                    bad = [s.name for s in m.grpc().ListServices(
                        pb.ListServicesRequest(), timeout=10).services if s.health != "healthy"]
                    if bad:
                        raise RuntimeError(f"unhealthy during the CPU window: {bad}")
            finally:
                m.close()
    return out[0], out[1]


def hung_to_new_pid(root: Path, times: int) -> list[float]:
    """A service whose health endpoint stops answering (its process stays alive), with
    `failures = 3, interval = 1, timeout = 0.2`: seconds from the hang to the new pid
    RUNNING. The hang comes at a random point of the check interval."""
    hang = root / "hang"
    out = []
    with reserved_port() as port:
        svc = base_service("web", [sys.executable, SERVICE, "--http-port", str(port),
                                   "--hang-file", str(hang)], root,
                           health={"http": f"http://127.0.0.1:{port}/health", "interval": 1.0,
                                   "timeout": 0.2, "failures": 3})
        m = OurManager(root / "hung", [svc])
        try:
            m.start()
            for _ in range(times):
                st = wait_for(lambda: (s := m.status("web")).health == "healthy" and s, 30,
                              "web healthy")
                time.sleep(random.uniform(0.0, 1.0))  # a phase of the check interval
                old = st.pid
                t0 = time.monotonic()
                hang.write_text(str(old))
                wait_for(lambda old=old: (s := m.status("web")).pid not in (0, old)
                         and s.state == pb.SERVICE_STATE_RUNNING, 30, "a new pid", 0.002)
                out.append(time.monotonic() - t0)
        finally:
            m.close()
    return out


def _fifty(changed: int) -> list[list[str]]:
    return [["/bin/sleep", "100000" if i == changed else "infinity"] for i in range(50)]


def reload_ours(root: Path) -> float:
    """Milliseconds of a Reload RPC where one of 50 services changed; the other 49 keep
    their pids (checked)."""
    m = OurManager(root, [base_service(f"svc{i:02d}", argv, root)
                          for i, argv in enumerate(_fifty(-1))])
    try:
        m.start()

        def pids() -> dict[str, int]:
            return {s.name: s.pid for s in m.grpc().ListServices(
                pb.ListServicesRequest(), timeout=10).services
                if s.state == pb.SERVICE_STATE_RUNNING}

        def all_fifty() -> dict[str, int] | None:
            got = pids()
            return got if len(got) == 50 else None

        before = wait_for(all_fifty, 30, "50 running")
        m.services = [{**s, "command": argv} for s, argv in zip(m.services, _fifty(7),
                                                                 strict=True)]
        m.write_config()
        t0 = time.perf_counter()
        resp = m.grpc().Reload(pb.ReloadRequest(), timeout=30)
        took = (time.perf_counter() - t0) * 1000
        if list(resp.changed) != ["svc07"] or len(resp.unchanged) != 49:
            raise RuntimeError(f"reload changed the wrong services: {resp}")
        after = wait_for(all_fifty, 10, "svc07 back")
        touched = [n for n in before if n != "svc07" and after[n] != before[n]]
        if touched or after["svc07"] == before["svc07"]:
            raise RuntimeError(f"reload touched {touched} (svc07: {before['svc07']} -> "
                               f"{after['svc07']})")
        return took
    finally:
        m.close()


def reload_supervisord(root: Path, exe: Path) -> float:
    """supervisorctl's `update` over XML-RPC: reloadConfig, then for each changed group
    stopProcessGroup, removeProcessGroup, addProcessGroup (which starts it)."""
    programs = [Program(f"svc{i:02d}", argv, startsecs=0, stopwaitsecs=2)
                for i, argv in enumerate(_fifty(-1))]
    s = Supervisord(root, programs)
    try:
        s.start(exe)
        wait_for(lambda: all(p["statename"] == "RUNNING" for p in s.all_info()), 30,
                 "50 running")
        before = {p["name"]: p["pid"] for p in s.all_info()}
        s.programs = [Program(p.name, argv, startsecs=0, stopwaitsecs=2)
                      for p, argv in zip(programs, _fifty(7), strict=True)]
        s.write_config()
        t0 = time.perf_counter()
        [[added, changed, removed]] = s.rpc().supervisor.reloadConfig()
        for name in changed:
            s.rpc().supervisor.stopProcessGroup(name)
            s.rpc().supervisor.removeProcessGroup(name)
            s.rpc().supervisor.addProcessGroup(name)
        took = (time.perf_counter() - t0) * 1000
        if changed != ["svc07"] or added or removed:
            raise RuntimeError(f"supervisord changed {added, changed, removed}")
        after = wait_for(lambda: {p["name"]: p["pid"] for p in s.all_info()
                                  if p["statename"] == "RUNNING"}, 10, "svc07 back")
        touched = [n for n in before if n != "svc07" and after.get(n) != before[n]]
        if touched:
            raise RuntimeError(f"supervisord's update touched {touched}")
        return took
    finally:
        s.close()
