"""aictl's global options, accepted anywhere on the command line: before the command
(`aictl --hub X agents`), after it (`aictl agents --hub X`) or between a group and its
action (`aictl rollout --hub X list`); the environment is the fallback.

The top-level parser holds the defaults (environment, else built in); every command
parser repeats the options with `default=SUPPRESS`, so a value given after the command
wins and an absent one leaves the top-level value alone (argparse copies only what a
sub-parser set)."""

from __future__ import annotations

import argparse
import os

DEFAULT_HUB = "127.0.0.1:3000"


def add_global(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The connection options and --json; `top`: with their defaults (the top-level
    parser), else without any (a command's parser)."""

    def default(env: str, fallback: str = "") -> object:
        return os.environ.get(env, fallback) if top else argparse.SUPPRESS

    g = parser.add_argument_group("connection (anywhere on the command line)")
    g.add_argument("--hub", default=default("AICTL_HUB", DEFAULT_HUB), metavar="HOST:PORT",
                   help="hub gRPC address, or several comma-separated (the next is tried "
                        "when one is down; changes go to the leader) (env AICTL_HUB; "
                        f"default {DEFAULT_HUB})")
    g.add_argument("--manager", type=_not_empty, metavar="ADDRESS",
                   default=(os.environ.get("AICTL_MANAGER") or None) if top
                   else argparse.SUPPRESS,
                   help="talk to one manager instead of the hub: HOST:PORT of its gRPC, "
                        "or its unix socket (unix:/run/ai-agent-manager/grpc.sock, or the "
                        "bare absolute path) (env AICTL_MANAGER)")
    g.add_argument("--token-file", default=default("AICTL_TOKEN_FILE"),
                   help="file holding the bearer token (env AICTL_TOKEN_FILE)")
    g.add_argument("--tls-ca", default=default("AICTL_TLS_CA"),
                   help="CA certificate to verify the hub or manager with (enables TLS)")
    g.add_argument("--tls-cert", default=default("AICTL_TLS_CERT"),
                   help="client certificate for mutual TLS")
    g.add_argument("--tls-key", default=default("AICTL_TLS_KEY"),
                   help="client key for mutual TLS")
    g.add_argument("--tls-server-name", default=default("AICTL_TLS_SERVER_NAME"),
                   help="name to check in the server's certificate (when dialling an IP "
                        "the certificate does not list)")
    g.add_argument("--json", action="store_true",
                   default=False if top else argparse.SUPPRESS,
                   help="machine-readable JSON output")


def command_options() -> argparse.ArgumentParser:
    """A parent parser carrying the global options for a command's parser."""
    common = argparse.ArgumentParser(add_help=False)
    add_global(common, top=False)
    return common


def _not_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("wants HOST:PORT or a unix socket path, got "
                                         f"{text!r}")
    return text
