"""Running a host tool (systemctl, journalctl, an rc.d script) with a timeout on every call.

The systemd and rcd backends drive the host only through `run_command` and
`stream_lines`; a missing tool is a clear `NotConfigured` error, a call that overruns
its timeout is killed and reported as `DeadlineExceeded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass

import structlog

from backendai.errors import DeadlineExceeded, NotConfigured

log = structlog.get_logger(__name__)

MAX_OUTPUT = 4 << 20  # bytes of stdout kept from one call; more is cut
KILL_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def reason(self) -> str:
        """A one-line description of what went wrong, for error messages."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[-1][:500] if text else f"exit code {self.returncode}"


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_WAIT):
            await proc.wait()


async def run_command(argv: Sequence[str], *, timeout: float,
                      env: Mapping[str, str] | None = None) -> CommandResult:
    """Run argv (no shell) in its own process group; kill the group after `timeout` s."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env) if env is not None else None,
            start_new_session=True)
    except FileNotFoundError:
        raise NotConfigured(f"{argv[0]!r} not found on this host") from None
    except PermissionError:
        raise NotConfigured(f"{argv[0]!r} is not executable") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        log.warning("host_command.timeout", argv=list(argv), timeout=timeout)
        raise DeadlineExceeded(
            f"{' '.join(argv[:4])} did not finish within {timeout:g}s") from None
    except BaseException:
        await _kill(proc)
        raise
    code = proc.returncode if proc.returncode is not None else -1
    return CommandResult(code, out[:MAX_OUTPUT].decode("utf-8", "replace"),
                         err[:MAX_OUTPUT].decode("utf-8", "replace"))


async def stream_lines(argv: Sequence[str], *, first_line_timeout: float,
                       env: Mapping[str, str] | None = None
                       ) -> AsyncGenerator[list[bytes], None]:
    """Run a long-lived reader (`journalctl -f`) and yield its stdout in batches of lines.

    The process is killed when the caller stops iterating, and (through `setpriv
    --pdeathsig KILL`, where util-linux has it) when the manager itself dies, so a
    kill -9 of the manager leaves no follower behind (recent journalctl also exits once
    its stdout is closed; older ones would wait for the next entry). Only starting it has
    a timeout (the stream itself lasts as long as the caller wants it).
    """
    tool = argv[0]
    if shutil.which(tool) is None:
        raise NotConfigured(f"{tool!r} not found on this host")
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    try:
        async with asyncio.timeout(first_line_timeout):
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=dict(env) if env is not None else None, start_new_session=True,
                limit=1 << 20)
    except FileNotFoundError:
        raise NotConfigured(f"{tool!r} not found on this host") from None
    except TimeoutError:
        raise DeadlineExceeded(f"{tool} did not start within "
                               f"{first_line_timeout:g}s") from None
    try:
        while proc.stdout is not None:
            chunk = await proc.stdout.read(1 << 20)
            if not chunk:
                return
            while not chunk.endswith(b"\n") and len(chunk) < MAX_OUTPUT:
                more = await proc.stdout.read(1 << 20)
                if not more:
                    break
                chunk += more
            yield chunk.splitlines()
    finally:
        await _kill(proc)
