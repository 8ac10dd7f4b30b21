"""Pieces every daemon's entry point shares: the ready file, the single-instance lock,
and signal handling that only records the signal (a second SIGINT forces exit; SIGHUP
asks for a reload that the daemon's loop performs, one at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import structlog

from backendai.auth import Token, Tokens, check_distinct
from backendai.errors import ConfigError, FailedPrecondition

if TYPE_CHECKING:
    from backendai.tls import ReloadableServerCredentials

log = structlog.get_logger(__name__)


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Atomically write the bound addresses as JSON (tests and the demo read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


class InstanceLock:
    """An flock on a file in the state directory: one daemon per state_dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text().strip() or "another process"
            raise FailedPrecondition(
                f"{self.path.parent} is in use by pid {holder}; one daemon per state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def install_signal_handlers(request_shutdown: Callable[[], None],
                            request_reload: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT ask for a graceful stop; a second SIGINT exits at once; SIGHUP
    asks for a reload (`request_reload` only records it; see DaemonLifecycle.reloads)."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        seen.append(sig)
        log.info("daemon.signal", signal=sig.name)
        if sig == signal.SIGHUP:
            if request_reload is not None:
                request_reload()
            return
        if sig == signal.SIGINT and seen.count(signal.SIGINT) > 1:
            os._exit(130)
        request_shutdown()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)


class Secrets:
    """What SIGHUP re-reads: a daemon's token files and its server certificate files.
    All or nothing: if any file is unusable, the error is logged and every value in use
    stays as it was."""

    def __init__(self, tokens: Sequence[Token | None] = (),
                 tls: ReloadableServerCredentials | None = None, *,
                 server: Tokens | None = None) -> None:
        """`server`: the tokens the daemon accepts (among `tokens`), which must still
        differ from each other after a reload."""
        self.tokens = [t for t in tokens if t is not None]
        self.tls = tls
        self.server = server.tokens if server is not None else ()
        self.error = ""  # why the last reload() failed

    def reload(self) -> bool:
        try:
            values = [t.reread() for t in self.tokens]
            new = {id(t): v for t, v in zip(self.tokens, values, strict=True)}
            check_distinct(self.server, [new.get(id(t), t.value) for t in self.server])
            tls = self.tls.prepare() if self.tls is not None else None
        except ConfigError as exc:
            self.error = str(exc)
            log.warning("daemon.reload_failed", error=str(exc))
            return False
        self.error = ""
        for token, value in zip(self.tokens, values, strict=True):
            token.value = value
        if self.tls is not None and tls is not None:
            self.tls.use(tls)
        log.info("daemon.reloaded", tokens=len(values), tls=tls is not None)
        return True


class DaemonLifecycle:
    """The lifecycle contract every daemon of ours keeps: `run()` (in the subclass)
    returns only when fully stopped and then sets `_done`; `request_shutdown()` asks for
    a stop (signal handlers); `shutdown()` asks and waits, idempotent; `reload()` is what
    SIGHUP does, `request_reload()` asks for it (signal handlers) and `reloads()`, a task
    beside `run()`, performs it; `async with` wraps run's caller with shutdown."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self.secrets = Secrets()

    def reload(self) -> bool:
        """SIGHUP: re-read the token and certificate files (all or nothing). Runs in a
        worker thread (file reads), never twice at once."""
        return self.secrets.reload()

    def request_reload(self) -> None:
        """Record a SIGHUP; `reloads()` acts on it."""
        self._reload_wanted.set()

    async def perform_reload(self) -> None:
        """One reload, on the loop: by default `reload()` in a worker thread. A daemon
        that reloads more than its secrets (the manager: its config) overrides this."""
        await asyncio.to_thread(self.reload)

    async def reloads(self) -> None:
        """Perform requested reloads one at a time, until cancelled. Requests that come
        while one runs make one more reload after it, so the files read last win."""
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            log.info("daemon.reloading")
            try:
                await self.perform_reload()
            except Exception:  # a reload must never take the daemon down
                log.exception("daemon.reload_error")

    def request_shutdown(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self._stop.set()
        await self._done.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.shutdown()
