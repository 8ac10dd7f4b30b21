"""The rcd backend: a service run by an Unraid-style `/etc/rc.d/rc.NAME` script.

Every request is one script call with a timeout: `rc.NAME start|stop|restart|status`.
Status is polled (`status_interval`) and mapped by the pure `observe_rc_status`: the
LSB exit codes (0 running, 1/2 dead but a pid/lock file is left, 3 not running) and,
because many Unraid scripts always exit 0, the text ("... is not running"). A pid is
taken from the output ("pid 1234").

rc scripts do not restart a crashed service, so this unit does (the `restart`,
`backoff_*` and `crash_loop_max` keys): once the service was seen running (or started
through the manager) and is then found dead, it is started again after a backoff; more
than `crash_loop_max` failed restarts in a row end in FATAL until the next manual start.
What was last asked (start or stop) is kept in the state store: a stopped service stays
stopped, across manager restarts too, and one that died while the manager was down is
started again by the next manager. Every call
gets AI_STOP_TIMEOUT (the stop timeout in whole seconds), which deploy/'s rc scripts
honour before they SIGKILL the service's process group.

Logs are read from `log_file` (default `/var/log/NAME.log`), the file the script's
service writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from backendai.errors import BackendAIError, NotFound, ServiceFailed
from manager.config import ServiceConfig
from manager.statestore import ServiceRecord, StateStore
from manager.supervision.external_log import ExternalLog
from manager.supervision.host_command import CommandResult, run_command
from manager.supervision.polled_unit import Observed, PolledUnit
from manager.supervision.states import ServiceStatus, State

log = structlog.get_logger(__name__)

PID_RE = re.compile(r"\bpid\D{0,3}(\d{1,10})\b", re.IGNORECASE)
STOP_TIMEOUT_ENV = "AI_STOP_TIMEOUT"
NOT_RUNNING_RE = re.compile(r"\b(not running|stopped|dead|inactive)\b", re.IGNORECASE)


def observe_rc_status(returncode: int, output: str) -> Observed:
    """Map an rc script's `status` exit code and output to a state (pure)."""
    text = " ".join(output.split())[:300]
    match = PID_RE.search(output)
    pid = int(match.group(1)) if match else 0
    if returncode == 0 and not NOT_RUNNING_RE.search(output):
        return Observed(State.RUNNING, pid=pid, message=text)
    if returncode in (1, 2):
        return Observed(State.EXITED, message=text or "dead, but its pid file is left")
    if returncode in (0, 3):
        return Observed(State.STOPPED, message=text)
    return Observed(State.EXITED, message=f"status unknown (exit {returncode}): {text}")


class RcdUnit(PolledUnit):
    backend = "rcd"

    def __init__(self, config: ServiceConfig, store: StateStore | None = None) -> None:
        super().__init__(config)
        self.script = config.rc_script
        self.logs = ExternalLog(Path(config.log_file))
        self.store = store
        # "running" / "stopped", as last asked (kept in the state store, so a restarted
        # manager restarts a service that died while it was down, and leaves a stopped one
        # alone); None: never asked, adopt what the first observation shows.
        record = store.load_service(config.name) if store is not None else None
        self._desired: str | None = record.desired if record is not None else None
        self._restarts = 0
        self._failures = 0  # consecutive failed automatic restarts
        self._fatal = ""

    async def _call(self, verb: str, timeout: float, *,
                    stop_timeout: float | None = None) -> CommandResult:
        cfg = self.config
        if not await asyncio.to_thread(os.path.isfile, self.script):
            raise NotFound(f"rc script {self.script!r} not found")
        env = dict(os.environ) if cfg.inherit_env else {"PATH": os.defpath}
        env.update(cfg.env)
        # deploy/'s rc scripts wait this long for the service to stop before SIGKILL
        env[STOP_TIMEOUT_ENV] = str(max(1, math.ceil(
            cfg.policy.stop_timeout if stop_timeout is None else stop_timeout)))
        return await run_command([self.script, verb], timeout=timeout, env=env)

    async def observe(self) -> Observed:
        res = await self._call("status", self.config.call_timeout)
        obs = observe_rc_status(res.returncode, res.stdout + res.stderr)
        obs = Observed(obs.state, pid=obs.pid, restarts=self._restarts, message=obs.message)
        if self._fatal and obs.state != State.RUNNING:
            return Observed(State.FATAL, restarts=self._restarts, message=self._fatal)
        return obs

    async def _act(self, verb: str, timeout: float, *,
                   stop_timeout: float | None = None) -> None:
        res = await self._call(verb, timeout, stop_timeout=stop_timeout)
        log.info("rcd.called", service=self.name, verb=verb, rc=res.returncode)
        if res.returncode != 0:
            raise ServiceFailed(f"{self.script} {verb} failed: {res.reason}")

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        async with self._lock:
            self._desired, self._failures, self._fatal = "running", 0, ""
            self._save()
            before = await self.refresh()
            if before.state == State.RUNNING:
                return self.status()
            await self._act("start", self.config.call_timeout + self.config.policy.start_secs)
            if not wait:
                await self.refresh()
                return self.status()
            return await self.wait_running(before, "start")

    async def stop(self, *, timeout: float | None = None, force: bool = False) -> ServiceStatus:
        async with self._lock:
            self._desired, self._fatal = "stopped", ""
            self._save()
            obs = await self.refresh()
            if force and obs.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(obs.pid, 9)
            limit = self.config.policy.stop_timeout if timeout is None else timeout
            await self._act("stop", limit + self.config.call_timeout, stop_timeout=limit)
            await self.refresh()
            return self.status()

    async def restart(self) -> ServiceStatus:
        async with self._lock:
            self._desired, self._failures, self._fatal = "running", 0, ""
            self._save()
            before = await self.refresh()
            await self._act("restart", self.config.policy.stop_timeout + self.config.call_timeout
                            + self.config.policy.start_secs)
            return await self.wait_running(before, "restart")

    def _save(self) -> None:
        if self.store is not None and self._desired is not None:
            self.store.save_service(ServiceRecord(self.name, desired=self._desired))

    async def tail(self, lines: int) -> list[str]:
        return await self.logs.tail(lines)

    def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        return self.logs.follow(tail, follow=follow)

    # ---- supervision ------------------------------------------------------------------

    async def run(self) -> None:
        """Observe every status_interval; restart the service when it died unasked."""
        while not self._stopped.is_set():
            obs = None
            if not self._lock.locked():  # a request in progress observes for itself
                with contextlib.suppress(BackendAIError):
                    obs = await self.refresh()
            if obs is not None:
                if self._desired is None:
                    if obs.state == State.RUNNING:
                        self._desired = "running"
                        self._save()
                elif self._needs_restart(obs):
                    await self._auto_restart()
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval):
                    await self._stopped.wait()

    def _needs_restart(self, obs: Observed) -> bool:
        return (self._desired == "running" and not self._fatal and not self._lock.locked()
                and obs.state in (State.STOPPED, State.EXITED)
                and self.config.policy.restart != "never"
                and not (self.config.policy.restart == "on-failure" and obs.state == State.STOPPED))

    async def _auto_restart(self) -> None:
        cfg = self.config
        n = self._failures + 1
        delay = 0.0 if n <= 1 else min(cfg.policy.backoff_max,
                                       cfg.policy.backoff_initial * 2 ** min(n - 2, 30))
        if delay:
            self._apply(Observed(State.BACKOFF, restarts=self._restarts,
                                 message=f"died; restarting in {delay:.2f}s"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            if self._stopped.is_set():
                return
        async with self._lock:
            if self._desired != "running":
                return
            self._restarts += 1
            log.info("rcd.auto_restart", service=self.name, attempt=n)
            try:
                before = await self.refresh()
                await self._act("start", cfg.call_timeout + cfg.policy.start_secs)
                await self.wait_running(before, "restart")
                self._failures = 0
            except BackendAIError as exc:
                self._failures = n
                if cfg.policy.crash_loop_max and n > cfg.policy.crash_loop_max:
                    self._fatal = f"crash loop: {n} failed restarts in a row; last: {exc}"
                    log.warning("rcd.fatal", service=self.name, reason=self._fatal)
                with contextlib.suppress(BackendAIError):
                    await self.refresh()
