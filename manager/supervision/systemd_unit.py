"""The systemd backend: a service run by systemd, driven through `systemctl`.

Lifecycle requests are `systemctl start|stop|restart|kill` (each call with a timeout;
`--user` when `systemd_scope = "user"`); status is `systemctl show` of ActiveState,
SubState, MainPID, ExecMainStartTimestampMonotonic, NRestarts, Result, ExecMainCode,
ExecMainStatus and Restart, mapped to our states by the pure `observe_properties`.
systemd restarts the service itself (the unit's `Restart=`, `RestartSec=`,
`StartLimit*=`), so this backend makes no restart decision of its own and does not use
`restart_policy.decide_restart`: the manager's `restart`, `backoff_*` and
`crash_loop_*` keys do not apply. It only maps what systemd reports: an auto-restart
pending -> BACKOFF, a failed unit that systemd would have restarted (or a start limit
hit) -> FATAL ("systemd gave up"), a failed unit without `Restart=` -> EXITED. A manual
start resets systemd's failed state first (as a manual start clears FATAL in the other
backends). A forced stop queues the stop job before its SIGKILL (so systemd never
schedules a restart for it) and clears the failed state systemd records for a process
killed that way: the unit was stopped as asked, STOPPED, not FATAL. Status changes are
found by polling `systemctl show` every `status_interval` seconds (one ~10 ms call) and
every 50 ms while a request waits for a state.

Logs come from `journalctl -u UNIT -o json` (last N; `-f` for StreamLogs; the journal
files in `journal_directory` when set), or, when the service sets `log_file`, from that
file (the unit writes it with `StandardOutput=append:FILE`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

import structlog

from backendai.errors import DeadlineExceeded, NotFound, ServiceFailed, Unavailable
from manager.config import ServiceConfig
from manager.supervision.external_log import ExternalLog
from manager.supervision.host_command import CommandResult, run_command, stream_lines
from manager.supervision.polled_unit import Observed, PolledUnit
from manager.supervision.states import ServiceStatus, State

log = structlog.get_logger(__name__)

PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID",
              "ExecMainStartTimestampMonotonic", "NRestarts", "Result", "ExecMainCode",
              "ExecMainStatus", "Restart")
CLD_EXITED = 1  # ExecMainCode values (siginfo si_code)
CLD_KILLED = 2
CLD_DUMPED = 3


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (KEY=VALUE lines) as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def _int(props: Mapping[str, str], key: str) -> int:
    try:
        return int(props.get(key, "0") or "0")
    except ValueError:
        return 0


def observe_properties(props: Mapping[str, str], unit: str, *, now_wall: float,
                       now_mono: float) -> Observed:
    """Map systemd's unit properties to our states (pure: the clocks are passed in)."""
    load = props.get("LoadState", "")
    if load in ("not-found", "bad-setting", "error", "masked"):
        return Observed(State.STOPPED, exists=load != "not-found",
                        message=f"unit {unit} is {load}")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    result = props.get("Result", "")
    pid = _int(props, "MainPID")
    restarts = _int(props, "NRestarts")
    code = _int(props, "ExecMainCode")
    status = _int(props, "ExecMainStatus")
    exit_code = status if code == CLD_EXITED else None
    exit_signal = status if code in (CLD_KILLED, CLD_DUMPED) else None
    started_at = 0.0
    mono_us = _int(props, "ExecMainStartTimestampMonotonic")
    if pid and mono_us:
        started_at = now_wall - max(0.0, now_mono - mono_us / 1e6)
    if active in ("active", "reloading", "refreshing"):
        state = State.RUNNING
        message = "" if sub == "running" else f"{active} ({sub})"
    elif active == "activating":
        if sub.startswith("auto-restart"):
            state, message = State.BACKOFF, f"exited ({result}); systemd restarts it"
        else:
            state, message = State.STARTING, f"activating ({sub})"
    elif active == "deactivating":
        state, message = State.STOPPING, f"deactivating ({sub})"
    elif active == "failed" and (result == "start-limit-hit"
                                 or props.get("Restart", "no") not in ("", "no")):
        # a unit that systemd would restart is only left failed when systemd gave up
        state, message = State.FATAL, f"failed ({result}); systemd gave up restarting it"
    elif active == "failed":
        state, message = State.EXITED, f"failed ({result})"
    elif active == "inactive" and result not in ("", "success"):
        state, message = State.EXITED, f"inactive ({result})"
    elif active == "inactive":
        state, message = State.STOPPED, ""
    else:
        state, message = State.STOPPED, f"unknown state {active}/{sub}"
    return Observed(state, pid=pid if state.is_up else 0,
                    started_at=started_at, restarts=restarts, exit_code=exit_code,
                    exit_signal=exit_signal, message=message)


def journal_message(line: bytes) -> str | None:
    """The MESSAGE of one `journalctl -o json` line (binary messages come as byte arrays)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    msg = entry.get("MESSAGE")
    if isinstance(msg, str):
        return msg
    if isinstance(msg, list) and all(isinstance(b, int) and 0 <= b < 256 for b in msg):
        return bytes(msg).decode("utf-8", "replace").rstrip("\n")
    return None


class SystemdUnit(PolledUnit):
    backend = "systemd"

    def __init__(self, config: ServiceConfig) -> None:
        super().__init__(config)
        self.unit = config.unit
        user = config.systemd_scope == "user"
        self._systemctl = ["systemctl", "--user"] if user else ["systemctl"]
        match = f"--user-unit={self.unit}" if user else f"--unit={self.unit}"
        if config.journal_directory:  # every file there (--user would pick user-UID.journal)
            self._journal = ["journalctl", f"--directory={config.journal_directory}", match]
        else:
            self._journal = ["journalctl", "--user", match] if user else ["journalctl", match]
        self._file = ExternalLog(Path(config.log_file)) if config.log_file else None
        # `reset-failed` zeroes systemd's NRestarts; the restarts it had counted by then
        # are kept here, so the count this manager reports only grows (as the process
        # backend's does). In memory: a restarted manager starts from systemd's count.
        self._restarts_before_reset = 0
        self._nrestarts = 0  # NRestarts as last observed

    async def _systemctl_call(self, *args: str, timeout: float | None = None) -> CommandResult:
        return await run_command([*self._systemctl, *args],
                                 timeout=timeout or self.config.call_timeout)

    async def observe(self) -> Observed:
        res = await self._systemctl_call("show", "--property=" + ",".join(PROPERTIES),
                                         "--", self.unit)
        if res.returncode != 0:  # e.g. "Failed to connect to bus": no systemd to ask
            raise Unavailable(f"cannot get the status of {self.unit} from systemd: "
                              f"{res.reason}")
        obs = observe_properties(parse_show(res.stdout), self.unit, now_wall=time.time(),
                                 now_mono=time.monotonic())
        self._nrestarts = obs.restarts
        return replace(obs, restarts=obs.restarts + self._restarts_before_reset)

    async def _reset(self) -> None:
        """`systemctl reset-failed`, keeping the restarts systemd counted until now (both
        callers observed the unit just before)."""
        self._restarts_before_reset += self._nrestarts
        self._nrestarts = 0
        await self._systemctl_call("reset-failed", "--", self.unit)

    async def _existing(self) -> Observed:
        obs = await self.refresh()
        if not obs.exists:
            raise NotFound(f"systemd unit {self.unit!r} not found "
                           f"(systemctl{' --user' if len(self._systemctl) > 1 else ''})")
        return obs

    async def _act(self, verb: str, *extra: str, timeout: float | None = None) -> None:
        res = await self._systemctl_call(verb, *extra, "--", self.unit, timeout=timeout)
        if res.returncode != 0:
            raise ServiceFailed(f"systemctl {verb} {self.unit} failed: {res.reason}")
        log.info("systemd.requested", service=self.name, verb=verb, unit=self.unit)

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        async with self._lock:
            self.desired = "running"  # in memory: systemd keeps no "asked" state for us
            before = await self._existing()
            if before.state == State.RUNNING:
                return self.status()
            await self._reset_failed(before)
            if not wait:
                await self._act("start", "--no-block")
                await self.refresh()
                return self.status()
            await self._act("start",
                            timeout=self.config.call_timeout + self.config.policy.start_secs)
            return await self.wait_running(before, "start")

    async def stop(self, *, timeout: float | None = None, force: bool = False) -> ServiceStatus:
        async with self._lock:
            self.desired = "stopped"
            await self._existing()
            await self._stop(timeout, force)
            return self.status()

    async def _stop(self, timeout: float | None, force: bool) -> None:
        if force:
            # The stop job first, then SIGKILL. Killed first, a `Restart=` unit whose
            # main process systemd sees die before the stop job runs is scheduled for an
            # automatic restart (a restart the operator never asked for, counted in
            # NRestarts), and the stop then leaves it failed.
            await self._act("stop", "--no-block")
            await self._kill()
        killed = force
        limit = self.config.policy.stop_timeout if timeout is None else timeout
        try:
            await self._act("stop", timeout=limit + 1.0)
        except DeadlineExceeded:
            # systemd's own TimeoutStopSec is longer than the caller wants to wait.
            log.warning("systemd.stop_timeout", service=self.name, timeout=limit)
            await self._kill()
            killed = True
            await self._act("stop")
        obs = await self.refresh()
        if (killed and obs.exit_signal == signal.SIGKILL
                and obs.state in (State.FATAL, State.EXITED)):
            # systemd records a main process that died of our SIGKILL as a failure
            # (ActiveState=failed, Result=signal), which reads as FATAL ("gave up
            # restarting it") for a `Restart=` unit. It was stopped as asked: clear it.
            await self._reset()
            log.info("systemd.reset_after_kill", service=self.name, unit=self.unit)
            await self.refresh()

    async def _reset_failed(self, obs: Observed) -> None:
        """A manual start clears systemd's failed state and start-limit counter, as it
        clears the crash-loop state of the process backend."""
        if obs.state in (State.FATAL, State.EXITED):
            await self._reset()

    async def _kill(self) -> None:
        res = await self._systemctl_call("kill", "--signal=SIGKILL", "--", self.unit)
        log.info("systemd.killed", service=self.name, unit=self.unit, rc=res.returncode)

    async def restart(self) -> ServiceStatus:
        async with self._lock:
            self.desired = "running"
            before = await self._existing()
            await self._reset_failed(before)
            await self._act("restart",
                            timeout=self.config.call_timeout + self.config.policy.stop_timeout
                            + self.config.policy.start_secs)
            return await self.wait_running(before, "restart")

    # ---- logs -------------------------------------------------------------------------

    async def tail(self, lines: int) -> list[str]:
        if self._file is not None:
            return await self._file.tail(lines)
        res = await run_command([*self._journal, "--output=json", "--no-pager", "--quiet",
                                 f"--lines={lines}"], timeout=self.config.call_timeout)
        out = [m for m in map(journal_message, res.stdout.encode().splitlines())
               if m is not None]
        return out[-lines:]

    def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        if self._file is not None:
            return self._file.follow(tail, follow=follow)
        return self._follow_journal(tail, follow)

    async def _follow_journal(self, tail: int, follow: bool) -> AsyncGenerator[list[str], None]:
        if not follow:
            lines = await self.tail(tail) if tail else []
            if lines:
                yield lines
            return
        argv = [*self._journal, "--output=json", "--no-pager", "--quiet", "--follow",
                f"--lines={tail}"]
        async for batch in stream_lines(argv, first_line_timeout=self.config.call_timeout):
            lines = [m for m in map(journal_message, batch) if m is not None]
            if lines:
                yield lines
