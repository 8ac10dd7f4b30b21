"""How an aictl command talks gRPC, to the hub or to one manager: the channel (TLS from
the --tls-* flags), the exit statuses, and every failure turned into one line on stderr.

Exit statuses (docs/ARCHITECTURE.md, "The operator CLI"): 0 ok; 1 a rollout or an
update that did not succeed, a host or service down, a refused call; 2 bad input
(usage errors, INVALID_ARGUMENT, NOT_FOUND); 3 the hub or the manager unreachable.

grpc is imported inside the functions: `aictl --help` imports none of it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import grpc

CALL_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_FAILED = 1       # a rollout or update that did not succeed, something down, refused
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3  # the hub or the manager could not be reached


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def open_channel(grpc_mod: Any, args: argparse.Namespace, target: str) -> grpc.Channel:
    """A channel to `target` (a gRPC target string), TLS when a --tls-* flag is set."""
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return grpc_mod.insecure_channel(target)
    from backendai.errors import ConfigError  # noqa: PLC0415
    from backendai.tls import ClientTLS  # noqa: PLC0415

    def path(value: str) -> Path | None:
        return Path(value) if value else None

    try:
        tls = ClientTLS.from_files(path(args.tls_ca), path(args.tls_cert), path(args.tls_key),
                                   args.tls_server_name,
                                   names=("--tls-ca", "--tls-cert", "--tls-key"))
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return grpc_mod.secure_channel(target, tls.credentials(), options=tls.channel_options())


def token_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The bearer token from --token-file, as call metadata."""
    if not args.token_file:
        return []
    from backendai.auth import load_token  # noqa: PLC0415
    from backendai.errors import BackendAIError  # noqa: PLC0415

    try:
        token = load_token(Path(args.token_file), "--token-file").decode()
    except BackendAIError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return [("authorization", f"Bearer {token}")]


def tls_hint(args: argparse.Namespace | None, detail: str) -> str:
    """What an operator should check when a connection failed the way a TLS mismatch
    fails ("" when the failure does not look like one). gRPC says only "Socket closed"
    when the server hangs up during the handshake (no client certificate, or one it
    does not trust, or plaintext sent to a TLS port)."""
    if args is None:
        return ""
    text = detail.lower()
    tls = bool(args.tls_ca or args.tls_cert or args.tls_key)
    if "certificate_verify_failed" in text:
        return ("the server's certificate is not signed by the --tls-ca CA (or does not "
                "name the address: --tls-server-name)")
    if "wrong_version_number" in text or "packet_length_too_long" in text:
        return "it does not speak TLS there: leave out the --tls-* flags for a plaintext port"
    if "socket closed" not in text and "handshake" not in text:
        return ""
    if not tls:
        return ("it closed the connection: if it serves TLS ([tls]), give --tls-ca, and "
                "--tls-cert/--tls-key when it requires client certificates")
    if not args.tls_cert:
        return ("the TLS handshake failed: if it requires client certificates "
                "(client_ca_file), give --tls-cert and --tls-key")
    return ("the TLS handshake failed: it does not accept the --tls-cert certificate (is it "
            "signed by the CA in its client_ca_file?)")


def reporting(body: Callable[[], int], unreachable: Callable[[], str],
              args: argparse.Namespace | None = None) -> int:
    """Run a command's body; failures become one line and the exit status.
    `unreachable()` names what could not be reached ("hub 127.0.0.1:3000"); `args`
    (the --tls-* flags) lets a failed TLS handshake say what to check."""
    import grpc  # noqa: PLC0415

    try:
        return body()
    except CliError as exc:
        print(f"aictl: {exc}", file=sys.stderr)
        return exc.status
    except grpc.RpcError as exc:
        code = exc.code()
        detail = exc.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            hint = tls_hint(args, detail)
            print(f"aictl: {unreachable()} unavailable: {detail}", file=sys.stderr)
            if hint:
                print(f"aictl: {hint}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"aictl: {code.name}: {detail}", file=sys.stderr)
        return EXIT_USAGE if code in (grpc.StatusCode.INVALID_ARGUMENT,
                                      grpc.StatusCode.NOT_FOUND) else EXIT_FAILED
    except Exception as exc:
        from backendai.errors import BackendAIError  # noqa: PLC0415

        if isinstance(exc, BackendAIError):
            print(f"aictl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


class Client(Protocol):
    def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=Client)


def client_command(connect: Callable[[argparse.Namespace], ClientT],
                   handler: Callable[[ClientT, argparse.Namespace], int],
                   unreachable: Callable[[argparse.Namespace, ClientT | None], str],
                   ) -> Callable[[argparse.Namespace], int]:
    """A command as argparse runs it: connect (a hub or a manager client), run `handler`,
    close the client, and report failures as `reporting` does; `unreachable(args,
    client)` names what could not be reached (client is None when connecting failed)."""
    def run(args: argparse.Namespace) -> int:
        box: list[ClientT] = []

        def body() -> int:
            box.append(connect(args))
            return handler(box[0], args)

        try:
            return reporting(body, lambda: unreachable(args, box[0] if box else None), args)
        finally:
            if box:
                box[0].close()
    return run


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def to_dict(msg: Any) -> dict[str, Any]:
    from google.protobuf import json_format  # noqa: PLC0415

    out: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return out
