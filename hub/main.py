"""`ai-hub --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import sys
from pathlib import Path

from backendai.config import release_anchors, release_version
from backendai.daemon_main import Daemon, daemon_main
from hub import config as config_mod


def _daemon(cfg: config_mod.HubConfig, ready_file: Path | None) -> Daemon:
    from hub.daemon import HubDaemon  # noqa: PLC0415 - keep --help fast

    version = release_version(cfg.version, release_anchors())
    return HubDaemon(cfg, ready_file=ready_file, version=version)


def main(argv: list[str] | None = None) -> int:
    return daemon_main("ai-hub", "Fleet inventory and staged rollouts (Backend AI hub).",
                       argv, load=config_mod.load,
                       summary=lambda cfg: f"{len(cfg.hosts)} hosts", make=_daemon)


if __name__ == "__main__":
    sys.exit(main())
