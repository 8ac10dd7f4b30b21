"""The local demo fleet: real processes on loopback, each on an ephemeral port, all in
one directory. A hub host (its manager supervising `ai-hub`) and N agent hosts (each a
manager supervising `ai-agent`), installed from releases built from this repository
into a `file://` package store.

Everything here is plumbing: starting processes, waiting for their ready files,
writing their configs, tearing them down. What the demo shows lives in demo.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT = 30.0


class DemoError(Exception):
    """The demo could not set up its fleet (with the reason and where to look)."""


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

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


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
