"""A real, private `systemd --user` manager for tests (PID 1 here is not systemd).

Inside `unshare --mount --propagation private --fork` a tmpfs goes over /run (with
/run/systemd/system, so systemd believes it was booted with systemd), the shell moves
into a new cgroup-v2 directory of its own, and `/lib/systemd/systemd --user` is exec'd
with XDG_RUNTIME_DIR and XDG_CONFIG_HOME in a scratch directory. With those two variables
set, `systemctl --user` from outside talks to it. A private systemd-journald runs in
the same namespace (started before systemd, its files bound to `journal_dir`), so the
units' output is in a real journal that `journalctl --directory=JOURNAL_DIR` reads; the
host's own journal stays untouched (and empty here). Teardown: `systemctl --user exit`,
then whatever is left in the cgroup tree (journald too) is killed and the cgroup
directories are removed.

Nothing a unit must see lives under /tmp: the deploy/ units use PrivateTmp=yes, so the
systemd directories and `scratch_root` are under /var/lib/backendai-tests instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SYSTEMD = Path("/lib/systemd/systemd")
JOURNALD = Path("/lib/systemd/systemd-journald")
SCRATCH_BASE = Path("/var/lib/backendai-tests")
CHECKOUT = Path(__file__).resolve().parent.parent
TMP = Path("/tmp")


def cgroup2_mount() -> Path | None:
    """Where a cgroup v2 hierarchy is mounted (the unified one in hybrid mode)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    return None


def why_not() -> str:
    """Why a private systemd cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount, cgroup directories)"
    for tool in ("unshare", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    if cgroup2_mount() is None:
        return "no cgroup v2 hierarchy is mounted"
    return ""


class UserSystemd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.runtime = base / "runtime"
        self.config_home = base / "config"
        mount = cgroup2_mount()
        if mount is None:
            raise RuntimeError("no cgroup2 mount")
        # Named like a user manager's cgroup (a slice, then user@UID.service), so journald
        # can tell which user unit wrote a line (_SYSTEMD_USER_UNIT).
        self.slice = mount / f"backendai-test-{uuid.uuid4().hex[:12]}.slice"
        self.cgroup = self.slice / f"user@{os.geteuid()}.service"
        self.journal_dir = base / "journal"
        self.log_path = base / "systemd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": str(self.runtime), "XDG_CONFIG_HOME": str(self.config_home)}

    @property
    def unit_dir(self) -> Path:
        return self.config_home / "systemd" / "user"

    def start(self, timeout: float = 30.0) -> None:
        self.runtime.mkdir(parents=True, mode=0o700)
        self.unit_dir.mkdir(parents=True)
        self.journal_dir.mkdir()
        self._bind_checkout()
        # A private journald too (its sockets in the private /run, its files in
        # journal_dir), so the journal is read for real: `journalctl --directory`.
        journald = (
            f"if [ -x {JOURNALD} ]; then mkdir -p /run/log/journal; "
            f"mount --bind {self.journal_dir} /run/log/journal; "
            f"{JOURNALD} >> {self.log_path} 2>&1 & "
            "for i in $(seq 50); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.1; "
            "done; fi; ")
        script = (
            "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/system; "
            f"mkdir -p {self.cgroup}; echo $$ > {self.cgroup}/cgroup.procs; "
            + journald +
            f"export XDG_RUNTIME_DIR={self.runtime} XDG_CONFIG_HOME={self.config_home}; "
            f"exec {SYSTEMD} --user")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--fork",
                 "sh", "-c", script],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd --user exited: {self.log_path.read_text()}")
            # (is-system-running says "offline" also when it cannot connect at all)
            res = self.systemctl("show", "--property=Version", check=False)
            if res.returncode == 0 and res.stdout.startswith("Version="):
                return
            time.sleep(0.05)
        raise RuntimeError(f"systemd --user did not come up: {self.log_path.read_text()}")

    def _bind_checkout(self) -> None:
        """The tests' units run code from this checkout (its virtualenv, the fixture
        service). When the checkout itself lives under /tmp (a fresh clone there), the
        units' PrivateTmp=yes would hide it: bind it read-only into every test unit with
        a drop-in for all services, keeping PrivateTmp itself on."""
        hidden = [p for p in {CHECKOUT, Path(sys.prefix).resolve(),
                              Path(sys.executable).resolve().parent}
                  if p == TMP or TMP in p.parents]
        if not hidden:
            return
        dropin = self.unit_dir / "service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        paths = " ".join(sorted(str(p) for p in hidden))
        (dropin / "50-test-checkout.conf").write_text(
            f"[Service]\nBindReadOnlyPaths={paths}\n")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=60, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", "-p", ",".join(props), "--", unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.systemctl("exit", check=False)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """Kill anything left in our cgroup tree (journald, too), then remove its
        directories bottom-up."""
        if not self.slice.exists():
            return
        deadline = time.monotonic() + 10
        while self.slice.exists() and time.monotonic() < deadline:
            dirs = [*sorted((p for p in self.slice.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True), self.slice]
            for d in dirs:
                with contextlib.suppress(OSError, ValueError):
                    for pid in (d / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    d.rmdir()
            if self.slice.exists():
                time.sleep(0.05)


@pytest.fixture(scope="module")
def user_systemd() -> Iterator[UserSystemd]:
    """A private systemd --user; os.environ points systemctl --user at it meanwhile.

    Its runtime directory is outside /tmp too: a manager run by a PrivateTmp unit must
    still reach $XDG_RUNTIME_DIR/systemd/private."""
    reason = why_not()
    if reason:
        pytest.skip(f"cannot run a private systemd --user: {reason}")
    base = SCRATCH_BASE / f"systemd-{uuid.uuid4().hex[:12]}"
    base.mkdir(parents=True)
    sd = UserSystemd(base)
    saved = {k: os.environ.get(k) for k in sd.env}
    try:
        sd.start()
        os.environ.update(sd.env)
        yield sd
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sd.stop()
        leftover = sd.slice.exists()
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            SCRATCH_BASE.rmdir()
        assert not leftover, f"cgroup {sd.slice} could not be removed"


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A scratch directory outside /tmp (PrivateTmp units cannot see /tmp)."""
    root = SCRATCH_BASE / uuid.uuid4().hex[:12]
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            SCRATCH_BASE.rmdir()
