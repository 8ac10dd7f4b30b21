"""The local demo fleet: real processes on loopback, each on an ephemeral port, all in
one directory. A hub host (its manager supervising `ai-hub`) and N agent hosts (each a
manager supervising `ai-agent`), installed from releases built from this repository
into a `file://` package store.

Everything here is plumbing: starting processes, waiting for their ready files,
writing their configs, tearing them down, and the signals that stop it all. What the
demo shows lives in demo.py.

Whatever stops the demo — SIGTERM, SIGINT (Ctrl-C), SIGHUP, at any moment — ends every
process it started: the first signal interrupts the main thread (as Ctrl-C does) and the
teardown runs; another signal during the teardown only makes it hurry (SIGKILL instead
of a graceful stop), never abandons it. Managers run in their own sessions (so a
terminal's Ctrl-C does not reach them and they stop their services in order), so the
demo ends them by pid; each process it starts, and each service a manager starts for it,
carries RUN_TAG in its environment, and a final sweep kills any such process still
there (a service whose manager died, one restarted meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT = 30.0
RUN_TAG = "AICTL_DEMO_RUN"   # environment variable naming the demo run a process is of
STOP_TIMEOUT = 15.0
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DemoError(Exception):
    """The demo could not set up its fleet (with the reason and where to look)."""


class Interrupted(BaseException):
    """A signal stopped the demo (a BaseException, as KeyboardInterrupt: no
    `except Exception` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """The demo's signal handling. Before the teardown, the first SIGINT / SIGTERM /
    SIGHUP raises Interrupted in the main thread, wherever it is (a build, a wait, a
    rollout being watched); during the teardown a signal is only recorded, and
    `hurry()` tells the teardown to kill rather than wait."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.tearing_down = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if not self.tearing_down:
            raise Interrupted(signum)

    def teardown(self) -> None:
        """From now on signals only hurry the teardown."""
        self.tearing_down = True
        self.received.clear()

    def hurry(self) -> bool:
        return self.tearing_down and bool(self.received)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition about another process on a monotonic deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise DemoError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass
class Daemon:
    """One process the demo started, with its ready file and log."""

    name: str
    argv: list[str]
    ready_file: Path
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self, cwd: Path) -> Daemon:
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=cwd,
                env={**os.environ, **self.env}, start_new_session=True)
        self.info = wait_for(self._ready, READY_TIMEOUT, f"{self.name} to be ready")
        return self

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None  # noqa: S101 - start() sets it
        if self.proc.poll() is not None:
            raise DemoError(f"{self.name} exited with {self.proc.returncode}; "
                            f"see {self.log_file}")
        try:
            info: dict[str, Any] = json.loads(self.ready_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return info

    def stop(self, timeout: float = STOP_TIMEOUT,
             hurry: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM, wait up to `timeout` (or until `hurry()`), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL if hurry() else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not hurry():
            time.sleep(0.05)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(5)


def sweep(tag: str, args: frozenset[str] = frozenset()) -> list[int]:
    """Kill every process (and its process group) whose environment carries RUN_TAG=tag,
    or whose command line has one of `args` (the demo's config files: a manager someone
    restarted with its demo command line), this process aside. Returns the pids
    killed."""
    import psutil  # noqa: PLC0415 - only when the demo tears down

    me = os.getpid()
    killed = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_TAG) != tag and not args.intersection(proc.cmdline()):
                continue
            pgid = os.getpgid(proc.pid)
            if pgid == proc.pid:
                os.killpg(pgid, signal.SIGKILL)
            proc.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        killed.append(proc.pid)
    return killed


def stable_ports(n: int) -> list[int]:
    """n free loopback ports below the kernel's ephemeral range, for a daemon that
    restarts where its clients know it. A client redialing a port inside that range
    while nothing listens there can be connected to itself by the kernel (TCP
    self-connect) and then holds the port, so the restarted daemon could not bind it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10000 if low > 12000 else 1024
    found: list[int] = []
    for port in random.sample(range(first, low), min(2000, low - first)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise OSError(f"no {n} free loopback ports between {first} and {low - 1}")


def manager_argv(config: Path, ready: Path) -> list[str]:
    return [sys.executable, "-m", "manager.main", "--config", str(config),
            "--ready-file", str(ready)]


def install_release(archive: Path, install_root: Path, version: str) -> Path:
    """Put a first release on a host the way deploy/install.sh does: extract into
    releases/VERSION (refusing anything unsafe) and point current at it."""
    target = install_root / "releases" / version
    if not target.exists():
        staging = install_root / "releases" / f".{version}.staging"
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        staging.rename(target)
    current = install_root / "current"
    tmp = install_root / ".current.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(Path("releases") / version)
    tmp.replace(current)
    return target


def repo_root() -> Path:
    """The checkout the demo builds its releases from."""
    return Path(__file__).resolve().parent.parent
