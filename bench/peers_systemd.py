"""A real `systemd --user` for the benchmark, started without PID 1 being systemd.

Recipe (see /work/shared/FACTS.md): in a private mount namespace mount a tmpfs on /run
and create /run/systemd/system (systemd's "booted" marker), move the shell into a fresh
cgroup-v2 directory, point XDG_RUNTIME_DIR and XDG_CONFIG_HOME at a temp dir and exec
`/lib/systemd/systemd --user`. `systemctl --user` then works from outside with the same
two variables. Stop: `systemctl --user exit`, then remove the cgroup directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")
SETUP = (
    "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/system; "
    'mkdir -p "$BENCH_CGROUP"; echo $$ > "$BENCH_CGROUP/cgroup.procs"; '
    "exec /lib/systemd/systemd --user"
)


def unavailable_reason() -> str:
    """Why a systemd --user cannot start here, or "" when it can be tried."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount, cgroup directories)"
    if not SYSTEMD.exists() or shutil.which("systemctl") is None:
        return "systemd is not installed"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        return f"no cgroup v2 hierarchy at {CGROUP_ROOT}"
    return ""


class SystemdUser:
    """One `systemd --user` instance in its own runtime and config directories."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "runtime"
        self.config = root / "config"
        self.unit_dir = self.config / "systemd" / "user"
        self.cgroup = CGROUP_ROOT / f"bench-systemd-{uuid.uuid4().hex[:12]}"
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime),
                    "XDG_CONFIG_HOME": str(self.config), "BENCH_CGROUP": str(self.cgroup)}
        self.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the systemd --user process itself

    def write_unit(self, name: str, body: str) -> None:
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        (self.unit_dir / f"{name}.service").write_text(body)

    def start(self, timeout: float = 20.0) -> float:
        """Start and wait until systemctl answers; returns start -> ready seconds."""
        self.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        log = (self.root / "systemd.log").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--fork",
             "sh", "-c", SETUP], env=self.env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd --user exited: "
                                   + (self.root / "systemd.log").read_text()[-2000:])
            if (self.runtime / "systemd" / "private").exists() and self.systemctl(
                    "show-environment", check=False).returncode == 0:
                ready = time.monotonic() - t0
                self.pid = self._find_pid()
                return ready
            time.sleep(0.002)
        raise TimeoutError("systemd --user did not answer in time")

    def _find_pid(self) -> int:
        """systemd is the one child of unshare (the shell exec'd it)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", "--no-pager", *args], env=self.env,
                              capture_output=True, text=True, check=check, timeout=30)

    def show(self, *units: str,
             props: str = "ActiveState,SubState,MainPID") -> list[dict[str, str]]:
        out = self.systemctl("show", "-p", props, *units).stdout
        result = []
        for block in out.strip().split("\n\n"):
            result.append(dict(line.split("=", 1) for line in block.splitlines() if "=" in line))
        return result

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.systemctl("exit", check=False)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        if not self.cgroup.exists():
            return
        dirs = sorted((p for p in self.cgroup.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True)
        for path in [*dirs, self.cgroup]:
            procs = path / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
            for _ in range(200):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
