"""Which operations on a host are this rollout's own, and where a rollback may go (pure).

A manager runs one operation per service; an operator (`POST /update`, aictl
--manager) or another tool may have started one when a rollout reaches the host, or
while the hub was down. The rollout adopts an operation only if it is its own: the
operation id it recorded, or the origin it recorded (HostRun.origin, written in the same
transaction as the state that issues the call) before sending Update or Rollback. Any
other running operation is foreign: the host waits for it (bounded by the step
deadline), then the rollout acts on what the host runs by then.

A rollback goes only to the version recorded before this rollout's own update
(HostRun.from_version), and only when the manager's own rollback would go there: the
host still runs the version this rollout installed, and the manager's previous release
is that version. Anything else is refused, saying why — never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.rollout_model import HostRun, ManagerReport, OwnOperation


@dataclass(frozen=True, slots=True)
class Own:
    """This host's own operation as the manager reports it."""

    operation_id: str
    running: bool
    outcome: str = ""
    message: str = ""
    from_version: str = ""     # "" when the report does not say


def is_own(h: HostRun, operation_id: str, origin: str) -> bool:
    """Whether an operation (id, origin) is the one this host's row recorded."""
    if not operation_id:
        return False
    if h.operation_id and operation_id == h.operation_id:
        return True
    return bool(h.origin) and origin == h.origin


def own_operation(h: HostRun, rep: ManagerReport) -> Own | None:
    """The host's own operation: running, the manager's last, or the one GetUpdate found
    by the recorded id or origin; None when the manager has none of ours."""
    if is_own(h, rep.running_operation_id, rep.running_origin):
        return Own(rep.running_operation_id, running=True,
                   from_version=_from(rep.own, rep.running_operation_id))
    if is_own(h, rep.last_operation_id, rep.last_origin):
        return Own(rep.last_operation_id, running=False, outcome=rep.last_outcome,
                   message=rep.last_message,
                   from_version=_from(rep.own, rep.last_operation_id))
    found = rep.own
    if found is not None and is_own(h, found.operation_id, found.origin):
        return Own(found.operation_id, running=found.running, outcome=found.outcome,
                   message=found.message, from_version=found.from_version)
    return None


def _from(found: OwnOperation | None, operation_id: str) -> str:
    return found.from_version if found is not None and \
        found.operation_id == operation_id else ""


def whose(origin: str) -> str:
    """Who issued an operation, in words, by its origin."""
    return f"origin {origin!r}" if origin else "no origin: an operator's request"


def foreign(h: HostRun, rep: ManagerReport) -> str:
    """The running operation this rollout did not start, in words ("" when none)."""
    op = rep.running_operation_id
    if not op or is_own(h, op, rep.running_origin):
        return ""
    who = whose(rep.running_origin)
    to = f" to {rep.running_version}" if rep.running_version else ""
    at = f", at {rep.running_step}" if rep.running_step else ""
    return f"operation {op}{to} ({who}{at})"


def rollback_refusal(h: HostRun, rep: ManagerReport, target: str) -> str:
    """Why this host must not be rolled back now ("" when the manager's rollback goes
    exactly to the recorded from_version). `rep.previous` must have been asked."""
    back = h.from_version
    if not back:
        return ("not rolled back: the version it ran before this rollout's update was "
                "not recorded")
    if rep.version != target:
        return (f"not rolled back: it runs {rep.version or 'no version'}, not {target} "
                f"that this rollout installed (changed since); it was on {back} before")
    if rep.previous != back:
        return (f"not rolled back: its manager would go back to "
                f"{rep.previous or 'no release'}, not {back} (the version before this "
                "rollout's update)")
    return ""
