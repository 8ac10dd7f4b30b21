"""`ai-manager --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backendai.daemon_main import Daemon, daemon_main
from manager import config as config_mod

if TYPE_CHECKING:
    from manager.updates.faults import UpdateFaults


def main(argv: list[str] | None = None, *, faults: UpdateFaults | None = None) -> int:
    """faults: the updater's fault points; only tests pass them
    (tests/fixtures/crashing_manager.py)."""

    def make(cfg: config_mod.ManagerConfig, ready_file: Path | None) -> Daemon:
        from manager.daemon import ManagerDaemon  # noqa: PLC0415 - keep --help fast

        return ManagerDaemon(cfg, ready_file=ready_file, faults=faults)

    def check(cfg: config_mod.ManagerConfig) -> None:
        from manager import preflight  # noqa: PLC0415 - only --check-config needs it

        preflight.check(cfg)

    return daemon_main("ai-manager", "Supervise services and update them (Backend AI).",
                       argv, load=config_mod.load,
                       summary=lambda cfg: f"{len(cfg.services)} services", make=make,
                       check=check)


if __name__ == "__main__":
    sys.exit(main())
