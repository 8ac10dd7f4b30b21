"""The rcd backend: a service run by an Unraid-style `/etc/rc.d/rc.NAME` script.

Every request is one script call with a timeout: `rc.NAME start|stop|restart|status`.
Status is polled (`status_interval`) and mapped by the pure `observe_rc_status`: the
LSB exit codes (0 running, 1/2 dead but a pid/lock file is left, 3 not running) and,
because many Unraid scripts always exit 0, the text ("... is not running"). A pid is
taken from the output ("pid 1234").

rc scripts do not restart a crashed service, so this unit does, by the decisions of
`rcd_supervisor.py` (which uses the process backend's one restart decision,
`restart_policy.decide_restart`: the same `restart`, `backoff_*` (with jitter) and
`crash_loop_*` keys mean the same). A service found dead that the manager did not stop
counts as a failure, since an rc script reports no exit status: `on-failure` restarts
it like `always`, `never` leaves it EXITED. A start (manual or automatic) that does not
stay RUNNING for `start_secs` is a failed start; too many end in FATAL until the next
manual start. What was last asked (start or stop) is kept in the state store: a stopped
service stays stopped, across manager restarts too, and one that died while the
manager was down is started again by the next manager. Every call gets
AI_STOP_TIMEOUT (the stop timeout in whole seconds), which deploy/'s rc scripts honour
before they SIGKILL the service's process group.

Logs are read from `log_file` (default `/var/log/NAME.log`), the file the script's
service writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import structlog

from backendai.errors import BackendAIError, NotFound, ServiceFailed
from manager.config import ServiceConfig
from manager.statestore import ServiceRecord, StateStore
from manager.supervision import rcd_supervisor
from manager.supervision.external_log import ExternalLog
from manager.supervision.host_command import CommandResult, run_command
from manager.supervision.polled_unit import Observed, PolledUnit
from manager.supervision.restart_policy import RestartDecision, Verdict
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
        record = store.load_service(config.name) if store is not None else None
        self.core = rcd_supervisor.RcdCore(desired=record.desired if record else None)
        super().__init__(config)
        self.script = config.rc_script
        self.logs = ExternalLog(Path(config.log_file))
        self.store = store
        self.policy = config.policy
        self._requests = 0  # start/stop/restart requests so far: a newer one takes over
        self._pending: RestartDecision | None = None  # for the background loop to carry out

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
        core = self.core
        if core.given_up is not None and obs.state != State.RUNNING:
            return Observed(core.given_up, restarts=core.restarts, message=core.message)
        return replace(obs, restarts=core.restarts)

    async def _act(self, verb: str, timeout: float, *,
                   stop_timeout: float | None = None) -> None:
        res = await self._call(verb, timeout, stop_timeout=stop_timeout)
        log.info("rcd.called", service=self.name, verb=verb, rc=res.returncode)
        if res.returncode != 0:
            raise ServiceFailed(f"{self.script} {verb} failed: {res.reason}")

    # ---- requests (each with the lock held) ------------------------------------------

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        async with self._lock:
            self._request(rcd_supervisor.RUNNING)
            before = await self.refresh()
            if before.state == State.RUNNING:
                return self.status()
            return await self._bring_up("start", before, wait=wait)

    async def stop(self, *, timeout: float | None = None, force: bool = False) -> ServiceStatus:
        async with self._lock:
            self._request(rcd_supervisor.STOPPED)
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
            self._request(rcd_supervisor.RUNNING)
            before = await self.refresh()
            return await self._bring_up("restart", before)

    def _request(self, desired: str) -> None:
        """What a request asks rules from now on: a pending automatic restart is dropped."""
        self.core = rcd_supervisor.requested(self.core, desired)
        self._requests += 1
        self._pending = None
        self._wake.set()
        self._save()

    async def _bring_up(self, verb: str, before: Observed, *, wait: bool = True,
                        ) -> ServiceStatus:
        """`rc.NAME start|restart`, then wait for RUNNING. A failure is raised, and also
        goes to the restart decision, which the background loop carries out."""
        cfg = self.config
        policy = cfg.policy
        timeout = cfg.call_timeout + policy.start_secs + (policy.stop_timeout
                                                          if verb == "restart" else 0.0)
        try:
            await self._act(verb, timeout)
            if wait:
                return await self.wait_running(before, verb)
        except NotFound:
            raise  # no script: nothing was started, nothing to retry
        except BackendAIError as exc:
            self.core, self._pending = rcd_supervisor.start_failed(
                self.core, time.monotonic(), self.policy, _roll(), reason=str(exc))
            self._wake.set()
            raise
        await self.refresh()
        return self.status()

    def last_asked(self) -> str:
        return self.core.desired or ""

    def _save(self) -> None:
        if self.store is not None and self.core.desired is not None:
            self.store.save_service(ServiceRecord(self.name, desired=self.core.desired))

    async def tail(self, lines: int) -> list[str]:
        return await self.logs.tail(lines)

    def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        return self.logs.follow(tail, follow=follow)

    # ---- supervision ------------------------------------------------------------------

    async def run(self) -> None:
        """Observe every status_interval; restart the service when it died unasked."""
        first = True
        while not self._stopped.is_set():
            requests = self._requests
            obs = await self.poll()
            if obs is not None:
                # an observation begun before a request may predate what it did
                if self._pending is None and requests == self._requests:
                    desired = self.core.desired
                    self.core, self._pending = rcd_supervisor.observed(
                        self.core, obs.state, time.monotonic(), self.policy, _roll(),
                        first=first, detail=obs.message)
                    if self.core.desired != desired:
                        self._save()
                first = False
            self.ready.set()
            decision, self._pending = self._pending, None
            if decision is not None:
                await self._carry_out(decision)
            else:
                await self.pause(self.config.status_interval)

    async def _carry_out(self, decision: RestartDecision) -> None:
        """Restart the service now or after the backoff, again after each failed start,
        until it runs or the policy gives up. A request in between, or shutdown(), takes
        over."""
        requests = self._requests
        while True:
            if decision.verdict in (Verdict.EXITED, Verdict.FATAL):
                state = self.core.given_up or State.EXITED
                log.warning("rcd.gave_up", service=self.name, state=state.value,
                            reason=decision.message)
                self._show(state, decision.message)
                return
            if decision.verdict == Verdict.BACKOFF:
                self._show(State.BACKOFF, decision.message)
                await self.pause(decision.delay)
            async with self._lock:
                if self._stopped.is_set() or requests != self._requests:
                    return
                after = await self._restart_once(decision.reason)
            if after is None:
                return
            decision = after

    async def _restart_once(self, reason: str) -> RestartDecision | None:
        """One automatic start (the lock held): None when it came up, else what next."""
        cfg = self.config
        self.core = rcd_supervisor.restarting(self.core)
        before = Observed(State.STARTING, restarts=self.core.restarts,
                          message=f"restarting: {reason}")
        self._apply(before)
        log.info("rcd.auto_restart", service=self.name, restarts=self.core.restarts,
                 reason=reason)
        try:
            await self._act("start", cfg.call_timeout + cfg.policy.start_secs)
            await self.wait_running(before, "restart")
        except BackendAIError as exc:
            self.core, decision = rcd_supervisor.start_failed(
                self.core, time.monotonic(), self.policy, _roll(), reason=str(exc))
            return decision
        self.core = rcd_supervisor.came_up(self.core)
        return None

    def _show(self, state: State, message: str) -> None:
        self._apply(Observed(state, restarts=self.core.restarts, message=message))


def _roll() -> float:
    """The backoff jitter's roll (jitter, not security: the shared generator)."""
    return random.random()  # noqa: S311
