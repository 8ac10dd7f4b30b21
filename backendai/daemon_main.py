"""The command line every daemon shares: `PROG --config FILE [--ready-file PATH]
[--check-config] [--version]`.

Exit status: 0 after a clean stop (or a valid `--check-config`), 2 for a config error,
1 when the daemon cannot run (port taken, state_dir in use, ...), each with one line on
stderr that names the cause. The daemon module is imported only to serve, so `--help`
and `--check-config` stay fast.

`--check-config` reads the config and runs the daemon's `check` (backendai/preflight.py):
the checks its start makes beyond the file (token files, the state directory), so "ok"
means the daemon will start, short of binding its ports and taking its lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from backendai import __version__
from backendai.daemon_support import install_signal_handlers
from backendai.errors import BackendAIError
from backendai.logging_setup import configure


class DaemonConfig(Protocol):
    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> str: ...


class Daemon(Protocol):
    def request_shutdown(self) -> None: ...

    def request_reload(self) -> None: ...

    async def reloads(self) -> None: ...

    async def run(self) -> None: ...


C = TypeVar("C", bound=DaemonConfig)
FAILURES = (BackendAIError, OSError)


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it (COLUMNS, else the
    terminal of stdout, else 80), without importing shutil."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    stdout = sys.__stdout__
    try:
        columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, told the width. argparse makes a formatter for every
    add_argument, and one without a width imports shutil (and with it bz2 and lzma,
    ~2 ms and 0.3 MB) to ask the terminal: at every start, where only --help prints."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def parse_args(prog: str, description: str, argv: list[str] | None,
               actions: Mapping[str, str] | None = None) -> argparse.Namespace:
    """actions: a daemon's own one-shot flags (`--migrate`) and their help."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument("--ready-file", type=Path,
                        help="write the bound addresses here as JSON once serving")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    for flag, text in (actions or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=text)
    return parser.parse_args(argv)


async def _serve(make: Callable[[], Daemon]) -> None:
    """Run the daemon, with SIGHUP's reloads performed by a task beside it."""
    daemon = make()
    install_signal_handlers(daemon.request_shutdown, daemon.request_reload)
    reloading = asyncio.create_task(daemon.reloads(), name="reloads")
    try:
        await daemon.run()
    finally:
        reloading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloading


def daemon_main(prog: str, description: str, argv: list[str] | None, *,
                load: Callable[[Path], C], summary: Callable[[C], str],
                make: Callable[[C, Path | None], Daemon],
                actions: Mapping[str, tuple[str, Callable[[C], int]]] | None = None,
                check: Callable[[C], object] | None = None) -> int:
    """Parse the command line, load the config with `load`, and run `make(cfg,
    ready_file)` until it stops. `summary(cfg)` is what `--check-config` prints, after
    `check(cfg)` (the start's own checks; raises a BackendAIError) passed.
    actions: flag -> (help, run(cfg) -> exit status), one-shot jobs instead of serving."""
    actions = actions or {}
    args = parse_args(prog, description, argv,
                      {flag: text for flag, (text, _) in actions.items()})
    try:
        cfg = load(args.config)
        if args.check_config and check is not None:
            check(cfg)
    except BackendAIError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{prog}: {args.config}: ok ({summary(cfg)})")
        return 0
    configure(cfg.log_level, cfg.log_format)
    for flag, (_, job) in actions.items():
        if getattr(args, flag.replace("-", "_")):
            try:
                return job(cfg)
            except FAILURES as exc:
                print(f"{prog}: {exc}", file=sys.stderr)
                return 1
    try:
        asyncio.run(_serve(lambda: make(cfg, args.ready_file)))
    except FAILURES as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        matched, rest = group.split(FAILURES)
        if rest is not None or matched is None:
            raise
        for err in matched.exceptions:
            print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0
