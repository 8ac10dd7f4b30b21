"""What every service unit (process, systemd, rc.d) keeps for the updater and the health
monitor and does alike when told: the installed version, the update summary and the
health, each published with the unit's status at once (manager/supervision/unit.py is
the protocol these hooks are part of)."""

from __future__ import annotations

import time

from manager.config import ServiceConfig
from manager.supervision.states import HealthView, UpdateSummary


class UnitHooks:
    """A unit's base: it sets these in its constructor and publishes with `_publish`."""

    _version: str
    update_summary: UpdateSummary
    health: HealthView

    def _publish(self) -> None:
        raise NotImplementedError

    # ---- hooks for the updater --------------------------------------------------------

    def set_version(self, version: str) -> None:
        self._version = version
        self._publish()

    def set_update_summary(self, summary: UpdateSummary) -> None:
        self.update_summary = summary
        self._publish()

    # ---- hooks for the health monitor -------------------------------------------------

    def set_health(self, health: HealthView) -> None:
        self.health = health
        self._publish()


def initial_health(config: ServiceConfig) -> HealthView:
    """A service's health before its monitor reports: "unknown" with a check, else ""."""
    if config.health_check is None:
        return HealthView()
    return HealthView("unknown", "no check yet", time.time())
