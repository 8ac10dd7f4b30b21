"""The operating-system side of the built-in process backend (Linux only).

- Each service runs in its own session and process group (pgid == leader pid).
- Exit detection is event-driven: a pidfd (pidfd_open, Linux >= 5.3) becomes readable
  when the process exits; it works for re-adopted processes that are not our children.
- Output goes through a named pipe (FIFO) in state_dir/run. The service holds its end
  open read-write, so the pipe always has a reader: when the manager is down the
  service's writes fill the pipe buffer (raised to 1 MiB) instead of failing with
  EPIPE, and a restarted manager reopens the same FIFO and keeps reading.
- A process is identified by pid *and* start time, so a reused pid is never adopted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SPAWN_ID_ENV = "AI_MANAGER_SPAWN_ID"
PIPE_SIZE = 1 << 20
START_TIME_TOLERANCE = 0.05  # psutil's create_time is derived from clock ticks


@dataclass(frozen=True, slots=True)
class Identity:
    pid: int
    create_time: float


def open_log_fifo(path: Path) -> tuple[int, int]:
    """Open (creating if needed) the service's FIFO.

    Returns (reader_fd, child_fd): a non-blocking read-write descriptor for the
    manager, and a blocking read-write descriptor to hand to the child as stdout/err.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)
    if not path.is_fifo():
        raise OSError(f"{path} exists and is not a FIFO")
    reader = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    child = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # may be capped below PIPE_SIZE for non-root
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return reader, child


def spawn(argv: Sequence[str], *, cwd: str, env: Mapping[str, str], output_fd: int,
          user: str = "", group: str = "") -> subprocess.Popen[bytes]:
    """Start the service in a new session; raises OSError/SubprocessError on failure."""
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=output_fd,
        stderr=output_fd, start_new_session=True, close_fds=True,
        user=user or None, group=group or None, extra_groups=[] if user else None)


def identify(pid: int) -> Identity | None:
    """The process's identity, or None if it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return Identity(pid, proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same_process(ident: Identity, create_time: float) -> bool:
    return abs(ident.create_time - create_time) < START_TIME_TOLERANCE


def find_by_spawn_id(spawn_id: str) -> Identity | None:
    """Find the leader of a spawn whose pid was never recorded (crash right after fork)."""
    needle = spawn_id
    best: Identity | None = None
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if proc.environ().get(SPAWN_ID_ENV) != needle:
                continue
            ident = Identity(proc.pid, proc.info["create_time"])
            if best is None or ident.create_time < best.create_time:
                best = ident  # the oldest is the leader; children inherit the variable
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return best


def pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when no member is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> list[Identity]:
    """Every live descendant, including ones that left the group with setsid()."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            out.append(Identity(proc.pid, proc.create_time()))
    return out


def signal_identity(ident: Identity, sig: signal.Signals) -> None:
    """Signal one process, but only if it is still the same process."""
    current = identify(ident.pid)
    if current is None or not same_process(current, ident.create_time):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(ident.pid, sig)
