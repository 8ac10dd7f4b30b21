"""`aictl agents | status | logs | rollout …`: the operator's view of the fleet through the
hub's gRPC API. grpc and the generated stubs are imported only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aictl import render
from aictl.hub_client import Hub, HubListError

if TYPE_CHECKING:
    import grpc

    from backendai.v1 import hub_pb2

DEFAULT_HUB = "127.0.0.1:3000"
CALL_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_FAILED = 1  # a rollout that did not succeed, a host that is down
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3  # the hub could not be reached


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# ---- connection ------------------------------------------------------------------------

def _connection_args() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("--hub", default=os.environ.get("AICTL_HUB", DEFAULT_HUB),
                   help="hub gRPC address HOST:PORT, or several comma-separated (the next "
                        "is tried when one is down; changes go to the leader) (env "
                        "AICTL_HUB; default %(default)s)")
    g.add_argument("--token-file", default=os.environ.get("AICTL_TOKEN_FILE", ""),
                   help="file holding the hub's bearer token (env AICTL_TOKEN_FILE)")
    g.add_argument("--tls-ca", default=os.environ.get("AICTL_TLS_CA", ""),
                   help="CA certificate to verify the hub with (enables TLS)")
    g.add_argument("--tls-cert", default=os.environ.get("AICTL_TLS_CERT", ""),
                   help="client certificate for mutual TLS")
    g.add_argument("--tls-key", default=os.environ.get("AICTL_TLS_KEY", ""),
                   help="client key for mutual TLS")
    g.add_argument("--tls-server-name", default=os.environ.get("AICTL_TLS_SERVER_NAME", ""),
                   help="name to check in the hub's certificate (when dialling an IP the "
                        "certificate does not list)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def _open_channel(grpc_mod: Any, args: argparse.Namespace, address: str) -> grpc.Channel:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return grpc_mod.insecure_channel(address)
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
    return grpc_mod.secure_channel(address, tls.credentials(), options=tls.channel_options())


def _connect(args: argparse.Namespace) -> Hub:
    import grpc  # noqa: PLC0415 - keep `aictl --help` fast

    try:
        return Hub(args, lambda address: _open_channel(grpc, args, address))
    except HubListError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _run(handler: Callable[[Hub, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Connect, run one command, and turn failures into one clear line and an exit status."""
    def run(args: argparse.Namespace) -> int:
        import grpc  # noqa: PLC0415

        hub: Hub | None = None
        try:
            hub = _connect(args)
            return handler(hub, args)
        except CliError as exc:
            print(f"aictl: {exc}", file=sys.stderr)
            return exc.status
        except grpc.RpcError as exc:
            code = exc.code()
            detail = exc.details() or code.name
            if code == grpc.StatusCode.UNAVAILABLE:
                hubs = "hubs" if "," in args.hub else "hub"
                print(f"aictl: {hubs} {args.hub} unavailable: {detail}", file=sys.stderr)
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
        finally:
            if hub is not None:
                hub.close()
    return run


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _to_dict(msg: Any) -> dict[str, Any]:
    from google.protobuf import json_format  # noqa: PLC0415

    out: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return out


# ---- agents / status / logs ------------------------------------------------------------

def _labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label wants KEY=VALUE, got {item!r}", EXIT_USAGE)
        out[key] = value
    return out


def cmd_agents(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    request = hpb.ListHostsRequest(labels=_labels(args.label))
    call = hub.stub.ListHosts if args.all else hub.stub.ListAgents
    resp = call(request, timeout=CALL_TIMEOUT, metadata=hub.metadata)
    if args.json:
        _print_json([_to_dict(h) for h in resp.hosts])
    else:
        print(render.hosts_table(resp.hosts))
    return EXIT_OK


def cmd_status(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    resp = hub.stub.HostStatus(hpb.HostStatusRequest(hosts=args.hosts),
                               timeout=CALL_TIMEOUT, metadata=hub.metadata)
    if args.json:
        _print_json([_to_dict(h) for h in resp.hosts])
    else:
        print(render.host_services(resp.hosts))
    return EXIT_OK if all(h.reachable for h in resp.hosts) else EXIT_FAILED


def cmd_logs(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    if not 0 <= args.lines <= 100_000:
        raise CliError("--lines must be between 0 and 100000", EXIT_USAGE)
    stream = hub.stream(
        "StreamHostLogs",
        hpb.StreamHostLogsRequest(host=args.host, service=args.service,
                                  tail_lines=args.lines, no_follow=not args.follow),
        metadata=hub.metadata, timeout=None if args.follow else CALL_TIMEOUT)
    try:
        for batch in stream:
            if args.json:
                for line in batch.lines:
                    print(json.dumps({"host": args.host, "line": line}))
            else:
                sys.stdout.write("".join(f"{line}\n" for line in batch.lines))
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
    return EXIT_OK


# ---- rollouts --------------------------------------------------------------------------

def _strategy(args: argparse.Namespace) -> hub_pb2.RolloutStrategy:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    s = hpb.RolloutStrategy(
        waves=[w.strip() for w in args.waves.split(",") if w.strip()] if args.waves else [],
        max_parallel=args.max_parallel, min_healthy_seconds=args.min_healthy,
        healthy_deadline_seconds=args.healthy_deadline,
        step_deadline_seconds=args.step_deadline,
        max_failures_per_wave=args.max_failures_per_wave or "",
        max_failures_total=args.max_failures or "",
        pause_seconds=args.pause, pause_until_promote=args.pause_until_promote)
    if args.no_auto_rollback:
        s.auto_rollback = False
    if args.seed is not None:
        s.seed = args.seed
    return s


def cmd_rollout_start(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    request = hpb.StartRolloutRequest(
        version=args.version, service=args.service, include_hub=args.include_hub,
        dry_run=args.dry_run, description=args.description,
        target=hpb.RolloutTarget(labels=_labels(args.label),
                                 hosts=[h for h in (args.hosts or "").split(",") if h]),
        strategy=_strategy(args))
    rollout = hub.stub.StartRollout(request, timeout=CALL_TIMEOUT,
                                    metadata=hub.metadata).rollout
    if args.json and not args.watch:
        _print_json(_to_dict(rollout))
        return EXIT_OK
    if args.dry_run:
        print(render.plan(rollout))
        return EXIT_OK
    if not args.watch:
        print(f"rollout {rollout.id} started: version {rollout.version}, "
              f"{len(rollout.hosts)} hosts in {len(rollout.waves)} waves")
        print(f"watch it with: aictl rollout watch {rollout.id}")
        return EXIT_OK
    return _watch(hub, rollout.id, args)


def cmd_rollout_watch(hub: Hub, args: argparse.Namespace) -> int:
    return _watch(hub, args.id, args)


def _watch(hub: Hub, rollout_id: str, args: argparse.Namespace) -> int:
    """Follow a rollout to its end; reconnects resume from the last event seen."""
    import grpc  # noqa: PLC0415

    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    rollout = hub.stub.GetRollout(hpb.GetRolloutRequest(id=rollout_id),
                                  timeout=CALL_TIMEOUT, metadata=hub.metadata)
    rollout_id = rollout.id
    view = render.LiveView(sys.stdout, json_lines=args.json)
    view.show(rollout, None)
    next_index = 0
    final = False
    failures = 0
    while not final:
        stream = hub.stream(
            "WatchRollout", hpb.WatchRolloutRequest(id=rollout_id, from_index=next_index),
            metadata=hub.metadata)
        try:
            for event in _events(stream):
                next_index = event.index + 1
                failures = 0
                final = event.final
                if view.wants_rollout(event):
                    rollout = hub.stub.GetRollout(hpb.GetRolloutRequest(id=rollout_id),
                                                  timeout=CALL_TIMEOUT, metadata=hub.metadata)
                view.show(rollout, event)
                if final:
                    break
        except grpc.RpcError as exc:
            # The hub restarting (e.g. updating itself) ends the stream: reconnect and
            # resume from the next index, so nothing is missed.
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                raise
            failures += 1
            if failures > 60:
                raise
            view.note(f"hub {hub.address} connection lost ({exc.code().name}); "
                      "reconnecting …")
            if not hub.failed(exc):  # the same hub again (the only one): wait for it
                _wait_ready(hub, 2.0)
        else:
            if not final:  # the stream ended without a final event: reconnect
                view.note(f"hub {hub.address} ended the stream early; reconnecting …")
                _wait_ready(hub, 2.0)
        finally:
            stream.cancel()
    rollout = hub.stub.GetRollout(hpb.GetRolloutRequest(id=rollout_id),
                                  timeout=CALL_TIMEOUT, metadata=hub.metadata)
    view.finish(rollout)
    return EXIT_OK if rollout.state == hpb.ROLLOUT_STATE_SUCCEEDED else EXIT_FAILED


def _events(stream: Any) -> Iterator[Any]:
    yield from stream


def _wait_ready(hub: Hub, timeout: float) -> None:
    import grpc  # noqa: PLC0415

    with contextlib.suppress(grpc.FutureTimeoutError):
        grpc.channel_ready_future(hub.channel).result(timeout=timeout)


def _control(name: str) -> Callable[[Hub, argparse.Namespace], int]:
    def handler(hub: Hub, args: argparse.Namespace) -> int:
        from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

        method = getattr(hub.stub, name)
        rollout = method(hpb.RolloutControlRequest(id=args.id, reason=args.reason),
                         timeout=CALL_TIMEOUT, metadata=hub.metadata)
        if args.json:
            _print_json(_to_dict(rollout))
        else:
            print(render.summary(rollout))
        return EXIT_OK
    return handler


def cmd_rollout_list(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    resp = hub.stub.ListRollouts(hpb.ListRolloutsRequest(limit=args.limit,
                                                         active_only=args.active),
                                 timeout=CALL_TIMEOUT, metadata=hub.metadata)
    if args.json:
        _print_json([_to_dict(r) for r in resp.rollouts])
    else:
        print(render.rollouts_table(resp.rollouts))
    return EXIT_OK


def cmd_rollout_show(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    rollout = hub.stub.GetRollout(hpb.GetRolloutRequest(id=args.id), timeout=CALL_TIMEOUT,
                                  metadata=hub.metadata)
    if args.json:
        _print_json(_to_dict(rollout))
    else:
        print(render.detail(rollout))
    return EXIT_OK


# ---- argument parsing ------------------------------------------------------------------

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 604800: {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(text)


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**63:
        raise argparse.ArgumentTypeError(f"a seed is an integer 0 to 2^63-1, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _connection_args()

    p = sub.add_parser("agents", parents=[common], help="list the fleet's agent hosts")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--all", action="store_true", help="every host, the hub included")
    p.set_defaults(func=_run(cmd_agents))

    p = sub.add_parser("status", parents=[common],
                       help="the services of one or more hosts, asked live")
    p.add_argument("hosts", nargs="*", metavar="HOST", help="host names (default: all)")
    p.set_defaults(func=_run(cmd_status))

    p = sub.add_parser("logs", parents=[common], help="a host's service log (through the hub)")
    p.add_argument("host")
    p.add_argument("-f", "--follow", action="store_true", help="keep following, like tail -f")
    p.add_argument("-n", "--lines", type=int, default=100, help="lines of history (default 100)")
    p.add_argument("--service", default="", help="service on that host (default: primary)")
    p.set_defaults(func=_run(cmd_logs))

    rollout = sub.add_parser("rollout", help="staged rollouts across the fleet")
    rsub = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    p = rsub.add_parser("start", parents=[common], help="roll VERSION out in waves")
    p.add_argument("version")
    p.add_argument("--waves", default="", help='e.g. "1,10%%,50%%,100%%" (the default)')
    p.add_argument("--max-parallel", type=_count, default=0, help="hosts at once per wave")
    p.add_argument("--min-healthy", type=_seconds, default=0.0,
                   help="seconds a host must stay healthy on the new version")
    p.add_argument("--healthy-deadline", type=_seconds, default=0.0,
                   help="seconds a host has to become healthy")
    p.add_argument("--step-deadline", type=_seconds, default=0.0,
                   help="seconds per host from update to outcome (a hung host fails)")
    p.add_argument("--max-failures-per-wave", default="", help='count or "10%%"')
    p.add_argument("--max-failures", default="", help="failure budget of the whole rollout")
    p.add_argument("--pause", type=_seconds, default=0.0, help="seconds between waves")
    p.add_argument("--pause-until-promote", action="store_true",
                   help="wait for `aictl rollout promote` between waves")
    p.add_argument("--no-auto-rollback", action="store_true",
                   help="on failure halt, but leave moved hosts where they are")
    p.add_argument("--seed", type=_seed, default=None, help="fixes wave membership")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="target hosts with these labels")
    p.add_argument("--hosts", default="", help="comma-separated host names to target")
    p.add_argument("--service", default="", help="service to update (default: primary)")
    p.add_argument("--include-hub", action="store_true",
                   help="update the hub itself first (the seeds' order)")
    p.add_argument("--description", default="")
    p.add_argument("--dry-run", action="store_true", help="show the wave plan, start nothing")
    p.add_argument("--watch", action="store_true", help="then follow it until it ends")
    p.set_defaults(func=_run(cmd_rollout_start))

    p = rsub.add_parser("watch", parents=[common], help="follow a rollout live until it ends")
    p.add_argument("id", nargs="?", default="", help="rollout id (default: the latest)")
    p.set_defaults(func=_run(cmd_rollout_watch))

    for action, method, what in (("pause", "PauseRollout", "no new hosts start"),
                                 ("resume", "ResumeRollout", "continue a paused rollout"),
                                 ("promote", "PromoteRollout", "start the next wave now"),
                                 ("abort", "AbortRollout", "stop; hosts not started are skipped"),
                                 ("retry-failed", "RetryFailed", "update failed hosts again")):
        p = rsub.add_parser(action, parents=[common], help=what)
        p.add_argument("id", nargs="?", default="", help="rollout id (default: the active one)")
        p.add_argument("--reason", default="", help="recorded in the rollout's events")
        p.set_defaults(func=_run(_control(method)))

    p = rsub.add_parser("list", parents=[common], help="recent rollouts, newest first")
    p.add_argument("--limit", type=_count, default=20)
    p.add_argument("--active", action="store_true", help="only rollouts still running")
    p.set_defaults(func=_run(cmd_rollout_list))

    p = rsub.add_parser("show", parents=[common], help="one rollout with its waves and hosts")
    p.add_argument("id", nargs="?", default="", help="rollout id (default: the latest)")
    p.set_defaults(func=_run(cmd_rollout_show))
