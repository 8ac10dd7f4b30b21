"""The operating-system side of the built-in process backend (Linux only).

- Each service runs in its own session and process group (pgid == leader pid).
- Exit detection is event-driven: a pidfd (pidfd_open, Linux >= 5.3) becomes readable
  when the process exits; it works for re-adopted processes that are not our children.
- Output goes through a named pipe (FIFO) in state_dir/run. The service holds its end
  open read-write, so the pipe always has a reader: when the manager is down the
  service's writes fill the pipe buffer (raised to 1 MiB) instead of failing with
  EPIPE, and a restarted manager reopens the same FIFO and keeps reading.
- A process is identified by pid *and* start time, so a reused pid is never adopted.
  `identify` reads /proc directly, as psutil computes it (start time in clock ticks
  since boot plus the boot time), so a start that finds no process to adopt never loads
  psutil; the searches through the process table (`find_by_spawn_id`, `descendants`)
  use psutil, imported at their first use.
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


_BOOT_TIME: list[float] = []


def _boot_time() -> float:
    if not _BOOT_TIME:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime"):
                    _BOOT_TIME.append(float(line.split()[1]))
                    break
            else:
                raise OSError("no btime in /proc/stat")
    return _BOOT_TIME[0]


def identify(pid: int) -> Identity | None:
    """The process's identity, or None if it is gone or a zombie (psutil's create_time:
    /proc/PID/stat's start time / clock ticks + boot time)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
    if len(fields) < 20 or fields[0] == b"Z":  # fields[0] is field 3, the state
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return Identity(pid, int(fields[19]) / ticks + _boot_time())  # field 22, starttime


def same_process(ident: Identity, create_time: float) -> bool:
    return abs(ident.create_time - create_time) < START_TIME_TOLERANCE


def find_by_spawn_id(spawn_id: str) -> Identity | None:
    """Find the leader of a spawn whose pid was never recorded (crash right after fork)."""
    import psutil  # noqa: PLC0415 - see the module's docstring

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
    import psutil  # noqa: PLC0415 - see the module's docstring

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
