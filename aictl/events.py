"""`aictl events`: a daemon's event history and audit trail, listed or followed.

    aictl events [--manager HOST:PORT | --hub HOST:PORT [--host NAME]] [-f]
                 [--kind KIND] [--subject SUBJECT] [--since WHEN] [--until WHEN]
                 [-n N] [--json]

Against a manager (`--manager`, its gRPC address), the hub (`--hub`, the default), or
through the hub one host's manager (`--host agent-3`). Without --since: the newest N
events (default 20), oldest first; with --since: every event from then on (up to N
when -n is given). `-f` then follows new events as they are written, and after a lost
connection resumes after the last one shown: nothing is missed, nothing shown twice.
`--json`: one JSON object per line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from aictl.grpc_calls import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from aictl.options import command_options

DEFAULT_COUNT = 20
PAGE = 1000
MAX_COUNT = 1_000_000
CALL_TIMEOUT = 30.0
RECONNECT_MAX = 10.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
RELATIVE_RE = re.compile(r"([0-9]{1,9})([smhdw])")


def parse_when(text: str, *, now: float | None = None) -> float:
    """--since / --until: "10m", "2h", "3d" (that long ago), Unix seconds, or an ISO 8601
    time (UTC unless it names a zone)."""
    now = time.time() if now is None else now
    text = text.strip()
    if m := RELATIVE_RE.fullmatch(text):
        return max(0.0, now - int(m.group(1)) * UNITS[m.group(2)])
    if re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", text):
        return float(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"not a time: {text[:40]!r} (use 10m, 2h, 3d, Unix seconds or "
                       "2024-05-01T03:12:00Z)", EXIT_USAGE) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"a count is 1 to {MAX_COUNT}, got {text!r}")
    return int(text)


class Target:
    """A manager (its own channel) or the hub (aictl/hub_client.py: with several hubs,
    calls fail over between them; they share one history, so a watch resumes on another
    hub after the same id)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import grpc  # noqa: PLC0415 - keep `aictl --help` fast

        from aictl.fleet import connect  # noqa: PLC0415
        from aictl.grpc_calls import open_channel, token_metadata  # noqa: PLC0415
        from aictl.manager_client import parse_manager  # noqa: PLC0415

        self.what = f"manager {args.manager}" if args.manager else f"hub {args.hub}"
        self.hub: Any = None
        self.channel: Any = None
        if args.manager:
            from backendai.v1 import manager_pb2_grpc  # noqa: PLC0415

            self.metadata: list[tuple[str, str]] = token_metadata(args)
            self.channel = open_channel(grpc, args, parse_manager(args.manager).target)
            self.stub: Any = manager_pb2_grpc.ManagerStub(self.channel)
        else:
            self.hub = connect(args)
            self.metadata = self.hub.metadata
            self.stub = self.hub.stub

    def watch(self, request: Any) -> Iterator[Any]:
        if self.hub is not None:
            return iter(self.hub.stream("WatchEvents", request, metadata=self.metadata))
        return iter(self.stub.WatchEvents(request, metadata=self.metadata))

    def failed(self, exc: BaseException) -> None:
        """A stream broke: the next one goes to another hub when there is one."""
        if self.hub is not None:
            self.hub.failed(exc)

    def close(self) -> None:
        if self.hub is not None:
            self.hub.close()
        if self.channel is not None:
            self.channel.close()


# ---- output ---------------------------------------------------------------------------------

def event_json(e: Any) -> dict[str, Any]:
    out = {"id": e.id, "at": round(e.at_unix, 6), "kind": e.kind, "subject": e.subject,
           "message": e.message, "fields": dict(e.fields), "actor": e.actor,
           "transport": e.transport, "peer": e.peer, "result": e.result}
    if e.host:
        out["host"] = e.host
    return out


def event_line(e: Any) -> str:
    stamp = datetime.datetime.fromtimestamp(e.at_unix).strftime("%Y-%m-%d %H:%M:%S")
    host = f"{e.host} " if e.host else ""
    line = f"{stamp}  #{e.id:<6} {host}{e.kind:<16} {e.subject:<20} {e.message}"
    if e.kind.startswith("audit.") and e.peer:
        line += f"  (from {e.peer})"
    return line.rstrip()


def _show(e: Any, as_json: bool) -> None:
    sys.stdout.write((json.dumps(event_json(e)) if as_json else event_line(e)) + "\n")
    sys.stdout.flush()


# ---- listing and following -----------------------------------------------------------------

def _list_request(args: argparse.Namespace, **kw: Any) -> Any:
    from backendai.v1 import events_pb2 as epb  # noqa: PLC0415

    return epb.ListEventsRequest(kind=args.kind, subject=args.subject,
                                 since_unix=args.since_unix, until_unix=args.until_unix,
                                 host=args.host, **kw)


def _history(t: Target, args: argparse.Namespace) -> tuple[list[Any], int]:
    """The events to show first, oldest first, and the newest id the daemon has."""
    if args.since_unix:  # forward from then, page by page
        wanted = args.count or MAX_COUNT
        shown: list[Any] = []
        after = 0
        last = 0
        while len(shown) < wanted:
            resp = t.stub.ListEvents(_list_request(args, after_id=after,
                                                   limit=min(PAGE, wanted - len(shown))),
                                     timeout=CALL_TIMEOUT, metadata=t.metadata)
            shown += resp.events
            last = resp.last_id
            if not resp.next_after_id:
                break
            after = resp.next_after_id
        return shown, last
    resp = t.stub.ListEvents(_list_request(args, newest_first=True,
                                           limit=min(PAGE, args.count or DEFAULT_COUNT)),
                             timeout=CALL_TIMEOUT, metadata=t.metadata)
    return list(reversed(resp.events)), resp.last_id


def _follow(t: Target, args: argparse.Namespace, after: int) -> Iterator[Any]:
    """New events after `after`, for ever: when the connection drops (or the daemon ends
    the stream as it stops) it reconnects and resumes after the last event seen."""
    import grpc  # noqa: PLC0415

    from backendai.v1 import events_pb2 as epb  # noqa: PLC0415

    delay = 0.5
    while True:
        request = epb.WatchEventsRequest(after_id=after, kind=args.kind,
                                         subject=args.subject, host=args.host)
        why = "the stream ended"
        try:
            for e in t.watch(request):
                delay = 0.5
                after = max(after, e.id)
                yield e
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            why = exc.details() or "no connection"
            t.failed(exc)
        print(f"aictl: {t.what}: {why}; resuming after event {after}", file=sys.stderr)
        time.sleep(delay)
        delay = min(RECONNECT_MAX, delay * 2)


def _events(args: argparse.Namespace) -> int:
    if args.manager and args.host:
        raise CliError("--host asks the hub for a host's events; not with --manager",
                       EXIT_USAGE)
    args.since_unix = parse_when(args.since) if args.since else 0.0
    args.until_unix = parse_when(args.until) if args.until else 0.0
    if args.follow and args.until_unix:
        raise CliError("--until and -f do not go together", EXIT_USAGE)
    t = Target(args)
    try:
        shown, last = _history(t, args)
        for e in shown:
            _show(e, args.json)
        if args.follow:
            for e in _follow(t, args, max([last, *(e.id for e in shown)])):
                _show(e, args.json)
    finally:
        t.close()
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    import grpc  # noqa: PLC0415

    try:
        return _events(args)
    except CliError as exc:
        print(f"aictl: {exc}", file=sys.stderr)
        return exc.status
    except grpc.RpcError as exc:
        code = exc.code()
        detail = exc.details() or code.name
        where = f"manager {args.manager}" if args.manager else f"hub {args.hub}"
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"aictl: {where} unavailable: {detail}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"aictl: {code.name}: {detail}", file=sys.stderr)
        return EXIT_USAGE if code == grpc.StatusCode.INVALID_ARGUMENT else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", parents=[command_options()],
                       help="the event history and audit trail (list, or follow with -f)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="", help="through the hub: that host's manager")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new events")
    p.add_argument("--kind", default="", help='a kind, or a prefix: "audit." or "service*"')
    p.add_argument("--subject", default="", help='e.g. "service/web", or a glob "host/agent-*"')
    p.add_argument("--since", default="", help="10m, 2h, 3d, Unix seconds or ISO 8601")
    p.add_argument("--until", default="", help="as --since")
    p.add_argument("-n", "--count", type=_count, default=0,
                   help=f"how many (default {DEFAULT_COUNT}; with --since: all)")
    p.set_defaults(func=cmd_events)
