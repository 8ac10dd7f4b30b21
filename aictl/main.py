"""`aictl`: the operator's CLI. Each command group lives in its own module and registers
its subcommands here; modules import grpc and other heavy libraries only inside the
functions that run a command, so `aictl --help` starts fast.

The connection options and --json are global: accepted before the command, after it,
or between a group and its action (aictl/options.py). Output piped into a reader that
goes away (`aictl agents --json | head`) ends quietly with the status a SIGPIPE'd tool
has (141), never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from aictl.options import add_global
from backendai import __version__

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a tool killed by it

# (module, what it holds). Each module has `register(subparsers) -> None`, and every
# parser it adds sets `func=` to a callable taking the parsed args and returning the
# exit status.
COMMAND_MODULES = (
    ("aictl.release", "release build / publish / keygen"),
    ("aictl.fleet", "agents, status, logs, start, stop, restart"),
    ("aictl.rollout_cli", "rollout start / watch / … / list / show"),
    ("aictl.manager_cli", "--manager: update, rollback, releases, update-status, reload"),
    ("aictl.demo", "the local demo fleet"),
    ("aictl.events", "events: the event history and audit trail"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aictl", description="Operate a Backend AI fleet: releases, hosts, rollouts.")
    parser.add_argument("--version", action="version", version=f"aictl {__version__}")
    add_global(parser, top=True)
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
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
    # gRPC's core logs a failed TLS handshake at INFO on stderr, ahead of aictl's own
    # line that says the same; an operator who wants its logs sets GRPC_VERBOSITY.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = func(args)
        sys.stdout.flush()  # a reader gone before the last line shows here, not at exit
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return status


def _quiet_stdout() -> None:
    """The reader went away: send what is left of stdout nowhere, so the interpreter's
    final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
