"""`ai-agent --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import sys
from pathlib import Path

from agent import config as config_mod
from backendai.config import release_anchors, release_version
from backendai.daemon_main import Daemon, daemon_main


def _daemon(cfg: config_mod.AgentConfig, ready_file: Path | None) -> Daemon:
    from agent.daemon import AgentDaemon  # noqa: PLC0415 - keep --help fast

    version = release_version(cfg.version, release_anchors())
    return AgentDaemon(cfg, version=version, ready_file=ready_file)


def check(cfg: config_mod.AgentConfig) -> None:
    """--check-config: what AgentDaemon.run checks besides the file (agent/preflight.py)."""
    from agent import preflight  # noqa: PLC0415 - only --check-config needs it

    preflight.check(cfg)


def main(argv: list[str] | None = None) -> int:
    return daemon_main("ai-agent", "The per-host service of a Backend AI fleet.", argv,
                       load=config_mod.load, summary=lambda cfg: f"name {cfg.name}",
                       make=_daemon, check=check)


if __name__ == "__main__":
    sys.exit(main())
