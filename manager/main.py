"""`ai-manager --config FILE [--ready-file PATH] [--check-config]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from backendai import __version__
from backendai.daemon_support import install_signal_handlers
from backendai.errors import BackendAIError
from backendai.logging_setup import configure
from manager import config as config_mod


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ai-manager", description="Supervise services and update them (Backend AI).")
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument("--ready-file", type=Path,
                        help="write the bound addresses here as JSON once serving")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"ai-manager {__version__}")
    return parser.parse_args(argv)


async def _serve(cfg: config_mod.ManagerConfig, ready_file: Path | None) -> None:
    from manager.daemon import ManagerDaemon  # noqa: PLC0415 - keep --help fast

    daemon = ManagerDaemon(cfg, ready_file=ready_file)
    install_signal_handlers(daemon.request_shutdown)
    await daemon.run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except BackendAIError as exc:
        print(f"ai-manager: config error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"ai-manager: {args.config}: ok ({len(cfg.services)} services)")
        return 0
    configure(cfg.log_level, cfg.log_format)
    try:
        asyncio.run(_serve(cfg, args.ready_file))
    except BackendAIError as exc:
        print(f"ai-manager: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        matched, rest = group.split(BackendAIError)
        if rest is not None or matched is None:
            raise
        for err in matched.exceptions:
            print(f"ai-manager: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
