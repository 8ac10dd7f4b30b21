"""`aictl rollout start|watch|pause|resume|promote|abort|retry-failed|list|show`: staged
rollouts through the hub. `start --dry-run` shows the wave plan and, per package, whether
the store has the release (exit 1 when a package is missing); `list` and `show` count
outcomes the same way (render.counts_line). grpc is imported only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aictl import render
from aictl.fleet import hub_command, labels_of
from aictl.grpc_calls import CALL_TIMEOUT, EXIT_FAILED, EXIT_OK, print_json, to_dict
from aictl.hub_client import Hub
from aictl.options import command_options

if TYPE_CHECKING:
    from backendai.v1 import hub_pb2


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
        start_stopped=args.start_stopped,
        target=hpb.RolloutTarget(labels=labels_of(args.label),
                                 hosts=[h for h in (args.hosts or "").split(",") if h]),
        strategy=_strategy(args))
    rollout = hub.stub.StartRollout(request, timeout=CALL_TIMEOUT,
                                    metadata=hub.metadata).rollout
    missing = any(p.checked and not p.available for p in rollout.packages)
    if args.json and not args.watch:
        print_json(to_dict(rollout))
        return EXIT_FAILED if args.dry_run and missing else EXIT_OK
    if args.dry_run:
        print(render.plan(rollout))
        print(render.packages(rollout))
        return EXIT_FAILED if missing else EXIT_OK
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
            print_json(to_dict(rollout))
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
        print_json([to_dict(r) for r in resp.rollouts])
    else:
        print(render.rollouts_table(resp.rollouts))
    return EXIT_OK


def cmd_rollout_show(hub: Hub, args: argparse.Namespace) -> int:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    rollout = hub.stub.GetRollout(hpb.GetRolloutRequest(id=args.id), timeout=CALL_TIMEOUT,
                                  metadata=hub.metadata)
    if args.json:
        print_json(to_dict(rollout))
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
    common = command_options()

    rollout = sub.add_parser("rollout", parents=[common],
                             help="staged rollouts across the fleet")
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
    p.add_argument("--start-stopped", action="store_true",
                   help="start services their operators had stopped (default: install the "
                        "release, leave them stopped, count those hosts skipped)")
    p.add_argument("--description", default="")
    p.add_argument("--dry-run", action="store_true", help="show the wave plan, start nothing")
    p.add_argument("--watch", action="store_true", help="then follow it until it ends")
    p.set_defaults(func=hub_command(cmd_rollout_start))

    p = rsub.add_parser("watch", parents=[common], help="follow a rollout live until it ends")
    p.add_argument("id", nargs="?", default="", help="rollout id (default: the latest)")
    p.set_defaults(func=hub_command(cmd_rollout_watch))

    for action, method, what in (("pause", "PauseRollout", "no new hosts start"),
                                 ("resume", "ResumeRollout", "continue a paused rollout"),
                                 ("promote", "PromoteRollout", "start the next wave now"),
                                 ("abort", "AbortRollout", "stop; hosts not started are skipped"),
                                 ("retry-failed", "RetryFailed", "update failed hosts again")):
        p = rsub.add_parser(action, parents=[common], help=what)
        p.add_argument("id", nargs="?", default="", help="rollout id (default: the active one)")
        p.add_argument("--reason", default="", help="recorded in the rollout's events")
        p.set_defaults(func=hub_command(_control(method)))

    p = rsub.add_parser("list", parents=[common], help="recent rollouts, newest first")
    p.add_argument("--limit", type=_count, default=20)
    p.add_argument("--active", action="store_true", help="only rollouts still running")
    p.set_defaults(func=hub_command(cmd_rollout_list))

    p = rsub.add_parser("show", parents=[common], help="one rollout with its waves and hosts")
    p.add_argument("id", nargs="?", default="", help="rollout id (default: the latest)")
    p.set_defaults(func=hub_command(cmd_rollout_show))
