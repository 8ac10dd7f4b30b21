"""Services the state records name but the config no longer does: removed from the
file while the manager was down, or by a config reload that a crash cut short. The
manager stops what is left of them and forgets them, as a reload does with a removed
service, so no process runs on unmanaged.

A process is only signalled when it is still the one recorded (pid and start time, or
the spawn id in its environment), and only through its own process group (the process
backend runs each service as a group leader). Records of the other backends hold no
process (the host's init runs those services): they are only forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable

import structlog

from manager.statestore import ServiceRecord, StateStore
from manager.supervision import process_os

log = structlog.get_logger(__name__)

GRACE = 10.0  # seconds between SIGTERM and SIGKILL (the removed service's own is gone)


def _leader(rec: ServiceRecord) -> process_os.Identity | None:
    if rec.pid:
        ident = process_os.identify(rec.pid)
        if ident is not None and process_os.same_process(ident, rec.create_time):
            return ident
        return None
    if rec.spawn_id and rec.desired == "running":  # a crash right after the fork
        return process_os.find_by_spawn_id(rec.spawn_id)
    return None


async def _gone(pid: int, timeout: float) -> bool:
    """Wait (on the pid's pidfd) until it exits; False after `timeout`."""
    pidfd = process_os.pidfd_open(pid)
    if pidfd is None:
        return True
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(timeout):
            await exited.wait()
    except TimeoutError:
        return False
    else:
        return True
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def stop_removed(store: StateStore, configured: Iterable[str], *,
                       grace: float = GRACE) -> list[str]:
    """Stop and forget every recorded service not in `configured`; their names."""
    keep = set(configured)
    removed = []
    for rec in store.services():
        if rec.name in keep:
            continue
        leader = await asyncio.to_thread(_leader, rec)
        if leader is not None:
            log.warning("service.leftover_stopping", service=rec.name, pid=leader.pid)
            process_os.signal_group(leader.pid, signal.SIGTERM)
            if not await _gone(leader.pid, grace):
                process_os.signal_group(leader.pid, signal.SIGKILL)
                await _gone(leader.pid, grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leader.pid, signal.SIGKILL)  # what the leader left in its group
        store.forget_service(rec.name)
        log.info("service.forgotten", service=rec.name,
                 reason="no longer in the config")
        removed.append(rec.name)
    return removed
