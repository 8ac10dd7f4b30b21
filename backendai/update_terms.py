"""The words of an update operation: its steps, each step's status and the operation's
outcome. The manager journals them and sends them (backendai.v1 UpdateEvent.step /
status / outcome, UpdateSummary.last_outcome); the hub reads outcomes to drive a
rollout. Code compares members; `.value` is the text in the journal and on the wire,
unchanged (old journals load, old peers understand).
"""

from __future__ import annotations

import enum


class Step(enum.Enum):
    VALIDATE = "validate"          # the operation's first event: the request was accepted
    DOWNLOAD = "download"
    VERIFY = "verify"
    STAGE = "stage"
    STOP = "stop"
    SWITCH = "switch"
    START = "start"
    HEALTH = "health"
    COMMIT = "commit"
    ROLLBACK_STOP = "rollback_stop"
    ROLLBACK_SWITCH = "rollback_switch"
    ROLLBACK_START = "rollback_start"
    ROLLBACK_HEALTH = "rollback_health"
    CANCEL = "cancel"              # a forced lifecycle request asked to cancel (its reason)
    DONE = "done"                  # the operation's final event, carrying the outcome


class StepStatus(enum.Enum):
    STARTED = "started"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"            # the step had nothing to do (no release before)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    # A lifecycle request with `force` cancelled it on purpose: the previous release is
    # back (or nothing had changed yet).
    CANCELLED = "cancelled"
    # The service was stopped by the operator: the release was installed and switched to,
    # but the service left stopped (no start, no health gate). In words: "installed
    # (stopped)".
    INSTALLED_STOPPED = "installed_stopped"

    @classmethod
    def parse(cls, text: str) -> Outcome | None:
        """The outcome a peer reported; None for "" (no outcome) or a word unknown here."""
        try:
            return cls(text)
        except ValueError:
            return None


class OpKind(enum.Enum):
    UPDATE = "update"
    ROLLBACK = "rollback"


def outcome_text(outcome: Outcome | None) -> str:
    """The wire and journal text of an outcome: "" while there is none."""
    return outcome.value if outcome is not None else ""


def outcome_words(outcome: Outcome | None) -> str:
    """An outcome as messages say it ("installed (stopped)", "rolled back")."""
    if outcome is None:
        return ""
    if outcome is Outcome.INSTALLED_STOPPED:
        return "installed (stopped)"
    return str(outcome.value).replace("_", " ")
