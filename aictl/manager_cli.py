"""`aictl --manager ADDRESS …`: supervisorctl on one host, no hub needed — status,
start, stop, restart, logs [-f], update VERSION, releases, rollback, reload and
update-status, over the manager's gRPC (TCP with token and TLS, or its unix socket).

status, start, stop, restart and logs are shared with the hub's commands (aictl/
fleet.py registers them and hands them here when --manager is given); the rest are
manager-only and registered here. Lifecycle requests on a service whose update is
running are refused by the manager unless --force (which cancels the update first).

grpc and the generated stubs are imported only when a command runs."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import Callable
from typing import Any

from aictl import render
from aictl.grpc_calls import (
    CALL_TIMEOUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    client_command,
    print_json,
    to_dict,
)
from aictl.manager_client import Manager, parse_manager
from aictl.options import command_options

UPDATE_WAIT = 3600.0   # a followed update or rollback: its own health gate bounds it
GOOD_OUTCOMES = ("succeeded", "installed_stopped")
MAX_ORIGIN = 200


def manager_command(handler: Callable[[Manager, argparse.Namespace], int],
                    ) -> Callable[[argparse.Namespace], int]:
    """Connect to --manager, run one command, report failures (exit statuses as
    aictl/grpc_calls.py)."""
    return client_command(
        Manager, handler,
        lambda args, m: f"manager {m.address if m is not None else args.manager}")


def needs_manager(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if not args.manager:
            print(f"aictl: {name} talks to one manager: give --manager HOST:PORT (or its "
                  "unix socket), or set AICTL_MANAGER; through the hub, use "
                  "`aictl rollout …`", file=sys.stderr)
            return EXIT_USAGE
        return manager_command(HANDLERS[name])(args)
    return run


def origin() -> str:
    """Who asks, journaled with an update or rollback ("aictl:alice@laptop")."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    text = f"aictl:{user}@{socket.gethostname()}"
    return "".join(c for c in text if c.isprintable())[:MAX_ORIGIN]


# ---- shared with the hub's commands (called by aictl/fleet.py) -------------------------

def cmd_status(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    services: list[Any] = []
    seen: set[str] = set()
    for pattern in args.names or [""]:
        resp = m.stub.ListServices(mpb.ListServicesRequest(pattern=pattern),
                                   timeout=CALL_TIMEOUT, metadata=m.metadata)
        if pattern and not resp.services:
            raise CliError(f"no service matches {pattern!r}", EXIT_USAGE)
        for st in resp.services:
            if st.name not in seen:
                seen.add(st.name)
                services.append(st)
    if args.json:
        print_json([to_dict(s) for s in services])
    else:
        print(render.services_table(services))
    running = all(s.state == mpb.SERVICE_STATE_RUNNING for s in services)
    return EXIT_OK if running else EXIT_FAILED


def _lifecycle(m: Manager, args: argparse.Namespace, what: str) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    for name in args.names or [""]:
        if what == "start":
            st = m.stub.Start(mpb.StartRequest(service=name, no_wait=args.no_wait,
                                               force=args.force),
                              timeout=CALL_TIMEOUT * 4, metadata=m.metadata)
        elif what == "stop":
            st = m.stub.Stop(mpb.StopRequest(service=name, timeout_seconds=args.timeout,
                                             force=args.force),
                             timeout=CALL_TIMEOUT * 4 + args.timeout, metadata=m.metadata)
        else:
            st = m.stub.Restart(mpb.RestartRequest(service=name, force=args.force),
                                timeout=CALL_TIMEOUT * 4, metadata=m.metadata)
        if args.json:
            print(json.dumps(to_dict(st), sort_keys=True))
        else:
            print(render.service_line(st))
    return EXIT_OK


def cmd_start(m: Manager, args: argparse.Namespace) -> int:
    return _lifecycle(m, args, "start")


def cmd_stop(m: Manager, args: argparse.Namespace) -> int:
    return _lifecycle(m, args, "stop")


def cmd_restart(m: Manager, args: argparse.Namespace) -> int:
    return _lifecycle(m, args, "restart")


def cmd_logs(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    if not 0 <= args.lines <= 100_000:
        raise CliError("--lines must be between 0 and 100000", EXIT_USAGE)
    call = m.stub.StreamLogs(mpb.StreamLogsRequest(service=args.target or "",
                                                   tail_lines=args.lines,
                                                   no_follow=not args.follow),
                             metadata=m.metadata, timeout=None if args.follow else CALL_TIMEOUT)
    try:
        for batch in call:
            if args.json:
                for line in batch.lines:
                    print(json.dumps({"service": args.target or "", "line": line}))
            else:
                sys.stdout.write("".join(f"{line}\n" for line in batch.lines))
            sys.stdout.flush()
    except KeyboardInterrupt:
        call.cancel()
    return EXIT_OK


# ---- manager-only -----------------------------------------------------------------------

def _follow(m: Manager, op_id: str, args: argparse.Namespace) -> int:
    """Print an operation's steps until its final event; the exit status says how it
    ended."""
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    call = m.stub.WatchUpdate(mpb.WatchUpdateRequest(operation_id=op_id),
                              metadata=m.metadata, timeout=UPDATE_WAIT)
    outcome = ""
    try:
        for ev in call:
            if args.json:
                print(json.dumps(to_dict(ev), sort_keys=True))
            else:
                print(render.update_event_line(ev))
            sys.stdout.flush()
            if ev.final:
                outcome = ev.outcome
                break
    except KeyboardInterrupt:
        call.cancel()
        print(f"aictl: stopped following; the operation goes on (aictl --manager "
              f"{m.address} update-status --id {op_id})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        call.cancel()
    return EXIT_OK if outcome in GOOD_OUTCOMES else EXIT_FAILED


def cmd_update(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    resp = m.stub.Update(mpb.UpdateRequest(service=args.service, version=args.version,
                                           origin=origin(),
                                           start_stopped=args.start_stopped),
                         timeout=CALL_TIMEOUT, metadata=m.metadata)
    if args.json and (args.no_wait or not resp.started):
        print_json(to_dict(resp))
    elif not args.json:
        print(resp.message if not resp.started else
              f"update {resp.operation_id} to {args.version} started")
    if not resp.started or args.no_wait:
        return EXIT_OK
    return _follow(m, resp.operation_id, args)


def cmd_rollback(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    resp = m.stub.Rollback(mpb.RollbackRequest(service=args.service, origin=origin()),
                           timeout=CALL_TIMEOUT, metadata=m.metadata)
    if args.json and args.no_wait:
        print_json(to_dict(resp))
    elif not args.json:
        print(f"rollback {resp.operation_id} to {resp.version} started")
    if args.no_wait:
        return EXIT_OK
    return _follow(m, resp.operation_id, args)


def cmd_releases(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    resp = m.stub.ListReleases(mpb.ListReleasesRequest(service=args.service),
                               timeout=CALL_TIMEOUT, metadata=m.metadata)
    if args.json:
        print_json([to_dict(r) for r in resp.releases])
    else:
        print(render.releases_table(resp.releases))
    return EXIT_OK


def cmd_update_status(m: Manager, args: argparse.Namespace) -> int:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    op = m.stub.GetUpdate(mpb.GetUpdateRequest(service=args.service, operation_id=args.id),
                          timeout=CALL_TIMEOUT, metadata=m.metadata)
    if args.json:
        print_json(to_dict(op))
    else:
        print(render.operation_report(op))
    return EXIT_OK


def cmd_reload(m: Manager, args: argparse.Namespace) -> int:
    import grpc  # noqa: PLC0415

    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    try:
        resp = m.stub.Reload(mpb.ReloadRequest(), timeout=CALL_TIMEOUT * 4,
                             metadata=m.metadata)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        raise CliError(f"manager {m.address} cannot reload its config over gRPC (this "
                       "release does not implement Reload); send it SIGHUP instead "
                       "(systemctl reload ai-agent-manager): that re-reads its token and "
                       "TLS files") from None
    if args.json:
        print_json(to_dict(resp))
    else:
        print(render.reload_summary(resp))
    return EXIT_OK


HANDLERS: dict[str, Callable[[Manager, argparse.Namespace], int]] = {
    "update": cmd_update, "rollback": cmd_rollback, "releases": cmd_releases,
    "update-status": cmd_update_status, "reload": cmd_reload,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = command_options()

    p = sub.add_parser("update", parents=[common],
                       help="(--manager) update a service to VERSION, following its steps")
    p.add_argument("version")
    p.add_argument("service", nargs="?", default="", help="service (default: primary)")
    p.add_argument("--start-stopped", action="store_true",
                   help="start the service afterwards even if it was stopped")
    p.add_argument("--no-wait", action="store_true", help="return once accepted")
    p.set_defaults(func=needs_manager("update"))

    p = sub.add_parser("rollback", parents=[common],
                       help="(--manager) switch a service back to its previous release")
    p.add_argument("service", nargs="?", default="", help="service (default: primary)")
    p.add_argument("--no-wait", action="store_true", help="return once accepted")
    p.set_defaults(func=needs_manager("rollback"))

    p = sub.add_parser("releases", parents=[common],
                       help="(--manager) the releases of a service on disk")
    p.add_argument("service", nargs="?", default="", help="service (default: primary)")
    p.set_defaults(func=needs_manager("releases"))

    p = sub.add_parser("update-status", parents=[common],
                       help="(--manager) the running or last update, step by step")
    p.add_argument("service", nargs="?", default="", help="service (default: primary)")
    p.add_argument("--id", default="", help="one operation by its id")
    p.set_defaults(func=needs_manager("update-status"))

    p = sub.add_parser("reload", parents=[common],
                       help="(--manager) re-read the manager's config (as SIGHUP)")
    p.set_defaults(func=needs_manager("reload"))


__all__ = ["Manager", "cmd_logs", "cmd_restart", "cmd_start", "cmd_status", "cmd_stop",
           "manager_command", "parse_manager", "register"]
