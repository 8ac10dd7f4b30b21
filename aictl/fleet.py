"""`aictl agents | status | logs | start | stop | restart`: the operator's view of the
fleet through the hub's gRPC API — and, with `--manager ADDRESS`, of one host through
its manager (status, logs, start, stop, restart are shared: aictl/manager_cli.py
carries them out then). grpc and the generated stubs are imported only when a command
runs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable

from aictl import manager_cli, render
from aictl.grpc_calls import (
    CALL_TIMEOUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    client_command,
    open_channel,
    print_json,
    to_dict,
)
from aictl.hub_client import Hub, HubListError
from aictl.manager_cli import Manager, manager_command
from aictl.options import command_options

MAX_STOP_TIMEOUT = 3600.0


def connect(args: argparse.Namespace) -> Hub:
    import grpc  # noqa: PLC0415 - keep `aictl --help` fast

    try:
        return Hub(args, lambda address: open_channel(grpc, args, address))
    except HubListError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def hub_command(handler: Callable[[Hub, argparse.Namespace], int],
                ) -> Callable[[argparse.Namespace], int]:
    """Connect to the hub(s), run one command, turn failures into one clear line and an
    exit status (aictl/grpc_calls.py)."""
    return client_command(connect, handler,
                          lambda args, _: f"{'hubs' if ',' in args.hub else 'hub'} {args.hub}")


def either(on_hub: Callable[[Hub, argparse.Namespace], int],
           on_manager: Callable[[Manager, argparse.Namespace], int],
           ) -> Callable[[argparse.Namespace], int]:
    """A command of both kinds: to one manager with --manager, else through the hub."""
    hub_run, manager_run = hub_command(on_hub), manager_command(on_manager)

    def run(args: argparse.Namespace) -> int:
        return manager_run(args) if args.manager else hub_run(args)
    return run


# ---- agents / status / logs ------------------------------------------------------------

def labels_of(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label wants KEY=VALUE, got {item!r}", EXIT_USAGE)
        out[key] = value
    return out


def cmd_agents(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    request = hpb.ListHostsRequest(labels=labels_of(args.label))
    call = hub.stub.ListHosts if args.all else hub.stub.ListAgents
    resp = call(request, timeout=CALL_TIMEOUT, metadata=hub.metadata)
    if args.json:
        print_json([to_dict(h) for h in resp.hosts])
    else:
        print(render.hosts_table(resp.hosts))
    return EXIT_OK


def cmd_status(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    resp = hub.stub.HostStatus(hpb.HostStatusRequest(hosts=args.names),
                               timeout=CALL_TIMEOUT, metadata=hub.metadata)
    if args.json:
        print_json([to_dict(h) for h in resp.hosts])
    else:
        print(render.host_services(resp.hosts))
    return EXIT_OK if all(h.reachable for h in resp.hosts) else EXIT_FAILED


def cmd_logs(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    if not args.target:
        args.parser.error("logs needs a HOST (through the hub), or --manager ADDRESS")
    if not 0 <= args.lines <= 100_000:
        raise CliError("--lines must be between 0 and 100000", EXIT_USAGE)
    stream = hub.stream(
        "StreamHostLogs",
        hpb.StreamHostLogsRequest(host=args.target, service=args.service,
                                  tail_lines=args.lines, no_follow=not args.follow),
        metadata=hub.metadata, timeout=None if args.follow else CALL_TIMEOUT)
    try:
        for batch in stream:
            if args.json:
                for line in batch.lines:
                    print(json.dumps({"host": args.target, "line": line}))
            else:
                sys.stdout.write("".join(f"{line}\n" for line in batch.lines))
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
    return EXIT_OK


def manager_logs(m: Manager, args: argparse.Namespace) -> int:
    if args.service and args.target and args.service != args.target:
        raise CliError("give the service once: `logs SERVICE` or `--service SERVICE`",
                       EXIT_USAGE)
    args.target = args.target or args.service
    return manager_cli.cmd_logs(m, args)


# ---- start / stop / restart through the hub ---------------------------------------------

def _host_and_service(args: argparse.Namespace) -> tuple[str, str]:
    if not 1 <= len(args.names) <= 2:
        args.parser.error(f"{args.command} needs HOST [SERVICE] (through the hub), or "
                          "--manager ADDRESS [SERVICE ...]")
    return args.names[0], args.names[1] if len(args.names) > 1 else ""


def _lifecycle(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    host, service = _host_and_service(args)
    what = args.command
    deadline = CALL_TIMEOUT * 4
    if what == "start":
        st = hub.stub.StartService(hpb.StartServiceRequest(host=host, service=service,
                                                           force=args.force),
                                   timeout=deadline, metadata=hub.metadata)
    elif what == "stop":
        st = hub.stub.StopService(hpb.StopServiceRequest(
            host=host, service=service, timeout_seconds=args.timeout, force=args.force),
            timeout=deadline + args.timeout, metadata=hub.metadata)
    else:
        st = hub.stub.RestartService(hpb.RestartServiceRequest(host=host, service=service,
                                                               force=args.force),
                                     timeout=deadline, metadata=hub.metadata)
    if args.json:
        print(json.dumps({"host": host, **to_dict(st)}, sort_keys=True))
    else:
        print(f"{host}: {render.service_line(st)}")
    return EXIT_OK


# ---- argument parsing ------------------------------------------------------------------

def stop_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_STOP_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"seconds must be between 0 and {MAX_STOP_TIMEOUT:g}: {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = command_options()

    p = sub.add_parser("agents", parents=[common], help="list the fleet's agent hosts")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--all", action="store_true", help="every host, the hub included")
    p.set_defaults(func=hub_command(cmd_agents))

    p = sub.add_parser("status", parents=[common],
                       help="the services of hosts, asked live (with --manager: of one "
                            "host, by service name or glob)")
    p.add_argument("names", nargs="*", metavar="HOST|SERVICE",
                   help="host names (default: all); with --manager: services or globs")
    p.set_defaults(func=either(cmd_status, manager_cli.cmd_status))

    p = sub.add_parser("logs", parents=[common],
                       help="a host's service log (through the hub), or with --manager a "
                            "service's")
    p.add_argument("target", nargs="?", default="", metavar="HOST|SERVICE",
                   help="the host (through the hub); with --manager: the service")
    p.add_argument("-f", "--follow", action="store_true", help="keep following, like tail -f")
    p.add_argument("-n", "--lines", type=int, default=100, help="lines of history (default 100)")
    p.add_argument("--service", default="", help="service on that host (default: primary)")
    p.set_defaults(func=either(cmd_logs, manager_logs), parser=p)

    for what, helptext in (("start", "start a service"), ("stop", "stop a service"),
                           ("restart", "restart a service")):
        p = sub.add_parser(what, parents=[common],
                           help=f"{helptext}: HOST [SERVICE] through the hub, or with "
                                "--manager: [SERVICE ...]")
        p.add_argument("names", nargs="*", metavar="HOST|SERVICE")
        p.add_argument("--force", action="store_true",
                       help="cancel the service's running update first (the previous "
                            "release is restored); for stop, also SIGKILL at once")
        if what == "stop":
            p.add_argument("--timeout", type=stop_seconds, default=0.0,
                           help="seconds to wait for it to exit (0: its stop_timeout)")
        if what == "start":
            p.add_argument("--no-wait", action="store_true",
                           help="(--manager) return once spawned, not once RUNNING")
        handler = {"start": manager_cli.cmd_start, "stop": manager_cli.cmd_stop,
                   "restart": manager_cli.cmd_restart}[what]
        p.set_defaults(func=either(_lifecycle, handler), parser=p, command=what)
