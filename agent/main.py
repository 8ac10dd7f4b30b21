"""`ai-agent --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent import config as config_mod
from backendai import __version__
from backendai.config_fields import release_anchors, release_version
from backendai.daemon_support import install_signal_handlers
from backendai.errors import BackendAIError
from backendai.logging_setup import configure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ai-agent", description="The per-host service of a Backend AI fleet.")
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument("--ready-file", type=Path,
                        help="write the bound address here as JSON once serving")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"ai-agent {__version__}")
    return parser.parse_args(argv)


async def _serve(cfg: config_mod.AgentConfig, ready_file: Path | None, version: str) -> None:
    from agent.daemon import AgentDaemon  # noqa: PLC0415 - keep --help fast

    daemon = AgentDaemon(cfg, version=version, ready_file=ready_file)
    install_signal_handlers(daemon.request_shutdown)
    await daemon.run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except BackendAIError as exc:
        print(f"ai-agent: config error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"ai-agent: {args.config}: ok (name {cfg.name})")
        return 0
    configure(cfg.log_level, cfg.log_format)
    try:
        version = release_version(cfg.version, release_anchors())
        asyncio.run(_serve(cfg, args.ready_file, version))
    except (BackendAIError, OSError) as exc:
        print(f"ai-agent: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        matched, rest = group.split((BackendAIError, OSError))
        if rest is not None or matched is None:
            raise
        for err in matched.exceptions:
            print(f"ai-agent: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
