"""aictl's connection to one manager (`--manager`): its gRPC over TCP ("HOST:PORT",
token and TLS as for the hub) or its local unix socket (`grpc_socket`: "unix:/PATH" or
the bare absolute path; plaintext, the token still sent when given), as supervisorctl
talks to supervisord.

grpc is imported only when a command runs (`aictl --help` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from aictl.grpc_calls import EXIT_USAGE, CliError, open_channel, token_metadata

MAX_SOCKET_PATH = 107  # bytes: sun_path, as the manager's grpc_socket


@dataclass(frozen=True, slots=True)
class ManagerAddress:
    target: str      # the gRPC target ("127.0.0.1:3082", "unix:/run/x/grpc.sock")
    unix: bool

    def __str__(self) -> str:
        return self.target


def parse_manager(text: str) -> ManagerAddress:
    """--manager's value: HOST:PORT, unix:/PATH, unix:///PATH or /PATH."""
    from backendai.errors import InvalidArgument  # noqa: PLC0415
    from backendai.validate import check_address  # noqa: PLC0415

    if not isinstance(text, str) or not text.strip():
        raise CliError("--manager wants HOST:PORT or a unix socket path", EXIT_USAGE)
    text = text.strip()
    if text.startswith(("unix:", "/")):
        path = text.removeprefix("unix:")
        if path.startswith("///"):
            path = path[2:]
        shown = repr(text[:120])
        if not path.startswith("/") or path.startswith("//"):
            raise CliError(f"--manager: a unix socket path must be absolute, got {shown}",
                           EXIT_USAGE)
        if not path.isprintable() or len(path.encode()) > MAX_SOCKET_PATH:
            raise CliError(f"--manager: a unix socket path is at most {MAX_SOCKET_PATH} "
                           f"bytes of printable characters, got {shown}", EXIT_USAGE)
        return ManagerAddress(f"unix:{path}", unix=True)
    try:
        return ManagerAddress(check_address(text, "--manager"), unix=False)
    except InvalidArgument as exc:
        raise CliError(f"{exc} (or a unix socket path: unix:/PATH)", EXIT_USAGE) from None


class Manager:
    """A connected Manager stub plus the call metadata (bearer token)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import grpc  # noqa: PLC0415 - keep `aictl --help` fast

        from backendai.v1 import manager_pb2_grpc  # noqa: PLC0415

        self.address = parse_manager(args.manager)
        if self.address.unix and (args.tls_ca or args.tls_cert or args.tls_key):
            raise CliError("--tls-* flags do not apply to a unix socket (it is plaintext, "
                           "local only)", EXIT_USAGE)
        self.metadata = token_metadata(args)
        self.channel: Any = open_channel(grpc, args, self.address.target)
        self.stub = manager_pb2_grpc.ManagerStub(self.channel)

    def close(self) -> None:
        self.channel.close()
