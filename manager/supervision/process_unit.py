"""The built-in process backend's I/O shell around the pure supervisor state machine.

It feeds events (requests, spawn results, pidfd exits, timers) to `supervisor.transition`
and carries out the actions it returns. Lifecycle requests on one service are serialized
by a lock; status reads never take it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from backendai.errors import DeadlineExceeded, ServiceFailed
from backendai.feed import Feed
from manager.config import ServiceConfig
from manager.statestore import ServiceRecord, StateStore
from manager.supervision import process_os, supervisor
from manager.supervision.logstore import LogStore
from manager.supervision.states import ServiceStatus, State, UpdateSummary
from manager.supervision.unit_hooks import UnitHooks, initial_health

log = structlog.get_logger(__name__)

READ_CHUNK = 1 << 20
READ_BUDGET = 8 << 20  # bytes drained per loop callback before yielding to others
WAIT_MARGIN = 10.0


class ProcessUnit(UnitHooks):
    backend = "process"

    def __init__(self, config: ServiceConfig, *, state_dir: Path, store: StateStore) -> None:
        self.config = config
        self.policy = config.policy
        self.store = store
        self.fifo_path = state_dir / "run" / f"{config.name}.pipe"
        self.logs = LogStore(state_dir / "logs", config.name, max_bytes=config.log_max_bytes,
                             backups=config.log_backups)
        self.core = supervisor.Core()
        self.update_summary = UpdateSummary()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._pending: deque[supervisor.Event] = deque()
        self._dispatching = False
        self._timer: asyncio.TimerHandle | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._pgid = 0
        self._escaped: list[process_os.Identity] = []
        self._started_at = 0.0
        self._state_since = time.time()
        self._reader_fd: int | None = None
        self._child_fd: int | None = None
        self._record = ServiceRecord(config.name)
        self._version = config.version or "unknown"
        self._stopped = asyncio.Event()
        self.ready = asyncio.Event()  # set once run() recovered the service
        self.health = initial_health(config)
        # Autostart waits for SupervisedUnits (start order) when the service starts `after`
        # others, or when SupervisedUnits says so (a reload starts what it adds in order).
        self.defer_autostart = bool(config.after)
        self.autostart_pending = False
        self.feed: Feed[ServiceStatus] = Feed(self._snapshot())

    # ---- the ServiceUnit contract ---------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> ServiceStatus:
        return self.feed.value

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        async with self._lock:
            return await self._start(wait=wait)

    async def stop(self, *, timeout: float | None = None, force: bool = False) -> ServiceStatus:
        async with self._lock:
            return await self._stop(timeout, force)

    async def restart(self) -> ServiceStatus:
        async with self._lock:
            # The record keeps desired "running" across the stop: a manager killed
            # between the stop and the start brings the service back at its next start.
            await self._stop(None, False, desired="running")
            return await self._start(wait=True)

    async def pause(self) -> ServiceStatus:
        """Stop for a start that follows (a config reload restarting a changed service):
        like stop(), but the record keeps desired "running", so a manager killed before
        the start brings the service back at its next start."""
        async with self._lock:
            return await self._stop(None, False, desired="running")

    async def tail(self, lines: int) -> list[str]:
        return await self.logs.tail(lines)

    def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        return self.logs.follow(tail, follow=follow)

    def watch(self) -> AsyncIterator[ServiceStatus]:
        return self.feed.subscribe()

    async def run(self) -> None:
        """Open the log pipe, recover the service as it was left (re-adopt it, or decide
        to start it), set `ready`, then idle until shutdown."""
        self._open_pipe()
        self._recover()
        self.ready.set()
        await self._stopped.wait()

    async def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._reader_fd is not None:
            self._drain_pipe()
            loop.remove_reader(self._reader_fd)
            os.close(self._reader_fd)
            self._reader_fd = None
        if self._child_fd is not None:
            os.close(self._child_fd)
            self._child_fd = None
        self.logs.close()
        self.feed.close()

    # ---- the health monitor's hook and a reload (set_version and the rest: UnitHooks) --

    def unhealthy(self, pid: int, reason: str) -> None:
        self._dispatch(supervisor.Unhealthy(pid, reason))

    def reconfigure(self, config: ServiceConfig) -> None:
        """A reload changed this service's spec (same name and backend): the next spawn
        uses it. The caller stopped the service first."""
        self.config = config
        self.policy = config.policy
        self.logs.reconfigure(max_bytes=config.log_max_bytes, backups=config.log_backups)
        self.health = initial_health(config)
        self.defer_autostart = bool(config.after)
        self._publish()

    def environment(self) -> dict[str, str]:
        """The service's environment: the manager's own (with `inherit_env`, else only
        PATH), then `[env]` and the service's `env` (merged by the config loader)."""
        cfg = self.config
        env = dict(os.environ) if cfg.inherit_env else {"PATH": os.defpath}
        env.update(cfg.env)
        return env

    # ---- lifecycle internals (called with the lock held) --------------------------------

    async def _start(self, *, wait: bool) -> ServiceStatus:
        self._save(desired="running")
        before = self.core.restarts
        self._dispatch(supervisor.StartRequested())
        if not wait:
            return self.status()
        pid = self.core.pid
        deadline = self.policy.start_secs + WAIT_MARGIN
        try:
            async with asyncio.timeout(deadline):
                while True:
                    core = self.core
                    if core.state == State.RUNNING:
                        return self.status()
                    if core.state in (State.FATAL, State.EXITED, State.STOPPED) or (
                            core.restarts != before or (pid and core.pid != pid)):
                        why = core.message or core.state.value
                        raise ServiceFailed(f"service {self.name!r} failed to start: {why}")
                    await self._wait_change()
        except TimeoutError:
            raise DeadlineExceeded(
                f"service {self.name!r} did not reach RUNNING within {deadline:g}s") from None

    async def _stop(self, timeout: float | None, force: bool, *,
                    desired: str = "stopped") -> ServiceStatus:
        self._save(desired=desired)
        self._dispatch(supervisor.StopRequested(timeout=timeout, force=force))
        limit = (self.policy.stop_timeout if timeout is None else timeout) + \
            2 * supervisor.KILL_GRACE + WAIT_MARGIN
        try:
            async with asyncio.timeout(limit):
                while self.core.state == State.STOPPING:
                    await self._wait_change()
        except TimeoutError:
            raise DeadlineExceeded(
                f"service {self.name!r} did not stop within {limit:g}s") from None
        return self.status()

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # ---- the state machine pump --------------------------------------------------------

    def _dispatch(self, event: supervisor.Event) -> None:
        """Apply an event and its consequences; re-entrant calls are queued, not nested."""
        self._pending.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                ev = self._pending.popleft()
                old = self.core
                self.core, actions = supervisor.transition(
                    # jitter, not security; one shared generator, not 2.5 KB per service
                    old, ev, time.monotonic(), self.policy, random.random())  # noqa: S311
                if self.core.state != old.state:
                    self._state_since = time.time()
                    log.info("service.state", service=self.name, state=self.core.state.value,
                             previous=old.state.value, pid=self.core.pid,
                             reason=self.core.message)
                for action in actions:
                    self._act(action)
                # a request may change only what was asked (`desired`): shown too
                if self.core != old or self.feed.value.desired != self._record.desired:
                    self._publish()
        finally:
            self._dispatching = False

    def _act(self, action: supervisor.Action) -> None:
        match action:
            case supervisor.Spawn():
                self._spawn()
            case supervisor.SignalGroup(signal=sig):
                self._signal(sig)
            case supervisor.KillGroup():
                self._signal(signal.SIGKILL)
            case supervisor.SetTimer(token=token, delay=delay):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = asyncio.get_running_loop().call_later(
                    delay, self._dispatch, supervisor.TimerFired(token))

    def _spawn(self) -> None:
        cfg = self.config
        spawn_id = uuid.uuid4().hex
        # Recorded before the fork: a crash right after it can still find the process.
        self._save(desired="running", spawn_id=spawn_id, pid=0, create_time=0.0)
        env = self.environment()
        env[process_os.SPAWN_ID_ENV] = spawn_id
        try:
            child_fd = self._output_fd()
            cwd, argv = self.resolve_command()
            popen = process_os.spawn(argv, cwd=cwd, env=env, output_fd=child_fd,
                                     user=cfg.user, group=cfg.group)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.warning("service.spawn_failed", service=self.name, error=str(exc))
            self._pending.append(supervisor.SpawnFailed(str(exc)))
            return
        ident = process_os.identify(popen.pid)
        create_time = ident.create_time if ident else time.time()
        self._popen = popen
        self._attach(popen.pid, create_time)
        self._save(pid=popen.pid, create_time=create_time)
        log.info("service.spawned", service=self.name, pid=popen.pid, argv=argv)
        self._pending.append(supervisor.Spawned(popen.pid))

    def resolve_command(self) -> tuple[str, list[str]]:
        """The working directory and argv, inside current/ when install_root is set."""
        cfg = self.config
        argv = list(cfg.command)
        if cfg.install_root:
            current = Path(cfg.install_root) / "current"
            cwd = current / cfg.working_directory if cfg.working_directory else current
            if "/" in argv[0] and not argv[0].startswith("/"):
                argv[0] = str(current / argv[0])
            return str(cwd), argv
        return cfg.working_directory or os.getcwd(), argv

    def _attach(self, pid: int, create_time: float) -> None:
        """Watch a (spawned or adopted) leader for exit through its pidfd."""
        pidfd = process_os.pidfd_open(pid)
        self._pgid = pid
        self._escaped = []
        self._started_at = create_time
        if pidfd is None:  # already reaped: report the exit on the next loop turn
            asyncio.get_running_loop().call_soon(self._on_exit, pid)
            return
        self._pidfd = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit, pid)

    def _on_exit(self, pid: int) -> None:
        loop = asyncio.get_running_loop()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        code: int | None = None
        sig: int | None = None
        popen, self._popen = self._popen, None
        if popen is not None and popen.pid == pid:
            rc = popen.poll()
            if rc is None:  # pidfd said it exited; reap it for sure
                rc = popen.wait(timeout=1)
            code, sig = (None, -rc) if rc < 0 else (rc, None)
        self._drain_pipe()
        self.logs.flush_partial()
        log.info("service.exited", service=self.name, pid=pid, code=code, signal=sig)
        self._dispatch(supervisor.Exited(pid, code, sig))
        if self.core.pid == 0:
            self._save(pid=0, create_time=0.0, restarts=self.core.restarts)

    def _signal(self, sig: signal.Signals) -> None:
        pgid = self._pgid
        if not pgid:
            return
        if sig != signal.SIGKILL:
            # Remember descendants that left the group (setsid) so the kill reaches them.
            self._escaped = [d for d in process_os.descendants(pgid)
                             if d not in self._escaped] + self._escaped
        process_os.signal_group(pgid, sig)
        for ident in self._escaped:
            process_os.signal_identity(ident, sig)
        if sig == signal.SIGKILL:
            for ident in process_os.descendants(pgid):
                process_os.signal_identity(ident, sig)

    # ---- recovery after a manager restart ---------------------------------------------

    def _recover(self) -> None:
        rec = self.store.load_service(self.name)
        if rec is None:
            if self.config.autostart and self.defer_autostart:
                self.autostart_pending = True  # SupervisedUnits starts it, in order
            elif self.config.autostart:  # the spawn records desired "running" first
                self._dispatch(supervisor.StartRequested())
            return
        self._record = rec
        self.core = supervisor.Core(restarts=rec.restarts)
        ident = None
        if rec.pid:
            ident = process_os.identify(rec.pid)
            if ident is not None and not process_os.same_process(ident, rec.create_time):
                ident = None  # the pid was reused by another process
        elif rec.spawn_id and rec.desired == "running":
            ident = process_os.find_by_spawn_id(rec.spawn_id)
        if ident is not None:
            self._attach(ident.pid, ident.create_time)
            self._save(pid=ident.pid, create_time=ident.create_time)
            log.info("service.adopted", service=self.name, pid=ident.pid)
            self._dispatch(supervisor.Adopted(ident.pid, max(0.0, time.time() - ident.create_time)))
            if rec.desired == "stopped":  # the manager died while stopping it
                self._dispatch(supervisor.StopRequested())
        elif rec.desired == "running":
            self._save(pid=0, create_time=0.0)
            self._dispatch(supervisor.Vanished())
        self._publish()

    # ---- the log pipe -------------------------------------------------------------------

    def _output_fd(self) -> int:
        """The child's end of the log pipe, opening the pipe if it is not open yet."""
        self._open_pipe()
        if self._child_fd is None:
            raise OSError("the log pipe is not open")
        return self._child_fd

    def _open_pipe(self) -> None:
        if self._reader_fd is not None:
            return
        self._reader_fd, self._child_fd = process_os.open_log_fifo(self.fifo_path)
        asyncio.get_running_loop().add_reader(self._reader_fd, self._drain_pipe)

    def _drain_pipe(self) -> None:
        fd = self._reader_fd
        if fd is None:
            return
        budget = READ_BUDGET
        while budget > 0:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            self.logs.append(data)
            budget -= len(data)

    # ---- status --------------------------------------------------------------------------

    def _save(self, **changes: object) -> None:
        rec = self._record
        fields = {"name": rec.name, "desired": rec.desired, "spawn_id": rec.spawn_id,
                  "pid": rec.pid, "create_time": rec.create_time,
                  "restarts": self.core.restarts}
        fields.update(changes)
        new = ServiceRecord(**fields)  # type: ignore[arg-type]
        if new != rec:
            self.store.save_service(new)
            self._record = new

    def _snapshot(self) -> ServiceStatus:
        core = self.core
        cfg, health = self.config, self.health
        return ServiceStatus(
            name=self.name, state=core.state, pid=core.pid,
            started_at=self._started_at if core.pid else 0.0, restarts=core.restarts,
            exit_code=core.exit_code, exit_signal=core.exit_signal, version=self._version,
            package=cfg.package, backend=self.backend, message=core.message,
            state_since=self._state_since, adopted=core.adopted, update=self.update_summary,
            desired=self._record.desired,
            health=health.health, health_message=health.message,
            health_since=health.since, health_failures=health.failures,
            instance_of=cfg.instance_of, instance=cfg.instance, after=cfg.after)

    def _publish(self) -> None:
        self.feed.publish(self._snapshot())
        self._changed.set()

