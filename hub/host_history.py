"""The hub's own events besides rollouts and registrations: a host's manager becoming
reachable or lost (`host.reachability`).

The leading hub records them (followers watch the same managers: one record is
enough). Watchers connect while a hub is still taking the lead, so at the start of each
term the leader also records what changed since it last recorded: every host it now
reaches, and every host it recorded reachable and has lost since.
"""

from __future__ import annotations

from backendai.events.audit import Recorder
from hub.inventory import HostView, Inventory
from hub.leadership import Leadership


class HostHistory:
    def __init__(self, events: Recorder, leadership: Leadership, inventory: Inventory) -> None:
        self.events = events
        self.leadership = leadership
        self.inventory = inventory
        self.recorded: dict[str, bool] = {}  # host -> reachable, as last recorded

    def reachability(self, view: HostView, up: bool, why: str) -> None:
        if self.leadership.leading:
            self._record(view, up, why)

    def _record(self, view: HostView, up: bool, why: str) -> None:
        self.recorded[view.name] = up
        state = "reachable" if up else "unreachable"
        self.events.emit("host.reachability", f"host/{view.name}",
                         f"{view.name}'s manager is {state}: {why}",
                         {"reachable": up, "reason": why,
                          "manager_address": view.entry.manager_address})

    def catch_up(self) -> None:
        """What changed while this hub did not lead (or before it first led)."""
        for view in list(self.inventory.hosts.values()):
            before = self.recorded.get(view.name)
            if view.reachable and before is not True:
                self._record(view, True, f"version {view.version or 'unknown'}")
            elif not view.reachable and before is True:
                self._record(view, False, view.message)

    async def run(self) -> None:
        """At the start of every term, catch up; until cancelled."""
        while True:
            term = await self.leadership.next_term()
            self.catch_up()
            await term.ended.wait()
