"""`ai-hub --config FILE [--ready-file PATH] [--check-config] [--migrate]`."""

from __future__ import annotations

import sys
from pathlib import Path

from backendai.config import release_anchors, release_version
from backendai.daemon_main import Daemon, daemon_main
from hub import config as config_mod


def _daemon(cfg: config_mod.HubConfig, ready_file: Path | None) -> Daemon:
    from hub.daemon import HubDaemon  # noqa: PLC0415 - keep --help fast
    from hub.memory import tune_gc  # noqa: PLC0415

    tune_gc()
    version = release_version(cfg.version, release_anchors())
    return HubDaemon(cfg, ready_file=ready_file, version=version)


def _migrate(cfg: config_mod.HubConfig) -> int:
    from hub.migrate_cli import migrate  # noqa: PLC0415 - keep --help fast

    return migrate(cfg)


def check(cfg: config_mod.HubConfig) -> None:
    """--check-config: what HubDaemon.run checks besides the file, with the same
    functions (hub/preflight.py)."""
    from hub import preflight  # noqa: PLC0415 - only --check-config needs it

    preflight.check(cfg)


def main(argv: list[str] | None = None) -> int:
    return daemon_main("ai-hub", "Fleet inventory and staged rollouts (Backend AI hub).",
                       argv, load=config_mod.load,
                       summary=lambda cfg: f"{len(cfg.hosts)} hosts", make=_daemon,
                       actions={"migrate": ("apply the store's pending schema migrations "
                                            "and exit", _migrate)},
                       check=check)


if __name__ == "__main__":
    sys.exit(main())
