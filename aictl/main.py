"""`aictl`: the operator's CLI. Each command group lives in its own module and registers
its subcommands here; modules import grpc and other heavy libraries only inside the
functions that run a command, so `aictl --help` starts fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from backendai import __version__

# (module, what it holds). Each module has `register(subparsers) -> None`, and every
# parser it adds sets `func=` to a callable taking the parsed args and returning the
# exit status.
COMMAND_MODULES = (
    ("aictl.release", "release build / publish / keygen"),
    ("aictl.fleet", "agents, status, logs, rollout …"),
    ("aictl.demo", "the local demo fleet"),
    ("aictl.events", "events: the event history and audit trail"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aictl", description="Operate a Backend AI fleet: releases, hosts, rollouts.")
    parser.add_argument("--version", action="version", version=f"aictl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, _ in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
