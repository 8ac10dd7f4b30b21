"""`ai-manager --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import sys
from pathlib import Path

from backendai.daemon_main import Daemon, daemon_main
from manager import config as config_mod


def _daemon(cfg: config_mod.ManagerConfig, ready_file: Path | None) -> Daemon:
    from manager.daemon import ManagerDaemon  # noqa: PLC0415 - keep --help fast

    return ManagerDaemon(cfg, ready_file=ready_file)


def main(argv: list[str] | None = None) -> int:
    return daemon_main("ai-manager", "Supervise services and update them (Backend AI).",
                       argv, load=config_mod.load,
                       summary=lambda cfg: f"{len(cfg.services)} services", make=_daemon)


if __name__ == "__main__":
    sys.exit(main())
