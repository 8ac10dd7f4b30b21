"""The hub's own events besides rollouts and registrations: a host's manager becoming
reachable or lost (`host.reachability`), recorded by the leading hub only (followers
watch the same managers; one record is enough)."""

from __future__ import annotations

from backendai.events.audit import Recorder
from hub.inventory import HostView
from hub.leadership import Leadership


class HostHistory:
    def __init__(self, events: Recorder, leadership: Leadership) -> None:
        self.events = events
        self.leadership = leadership

    def reachability(self, view: HostView, up: bool, why: str) -> None:
        if not self.leadership.leading:
            return
        state = "reachable" if up else "unreachable"
        self.events.emit("host.reachability", f"host/{view.name}",
                         f"{view.name}'s manager is {state}: {why}",
                         {"reachable": up, "reason": why,
                          "manager_address": view.entry.manager_address})
