"""Engine and inventory values to and from `backendai.v1` hub messages."""

from __future__ import annotations

import struct
import time

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from hub import rollout_engine as E
from hub.inventory import HostView, Inventory
from hub.rollout_plan import Strategy, make_strategy
from hub.rollouts import StartRequest

ROLLOUT_STATES: dict[E.RolloutState, pb.RolloutState] = {
    s: getattr(pb, "ROLLOUT_STATE_" + s.value) for s in E.RolloutState}
HOST_STATES: dict[E.HostState, pb.HostRolloutState] = {
    s: getattr(pb, "HOST_ROLLOUT_STATE_" + s.value) for s in E.HostState}


def rollout_state(s: E.RolloutState) -> pb.RolloutState:
    return ROLLOUT_STATES[s]


def host_state(s: E.HostState | None) -> pb.HostRolloutState:
    return HOST_STATES[s] if s is not None else pb.HOST_ROLLOUT_STATE_UNSPECIFIED


def counts(c: E.Counts) -> pb.OutcomeCounts:
    return pb.OutcomeCounts(total=c.total, pending=c.pending, in_progress=c.in_progress,
                            succeeded=c.succeeded, failed=c.failed, unreachable=c.unreachable,
                            rolled_back=c.rolled_back, rollback_failed=c.rollback_failed,
                            skipped=c.skipped)


def strategy(s: Strategy) -> pb.RolloutStrategy:
    return pb.RolloutStrategy(
        waves=list(s.waves), max_parallel=s.max_parallel,
        min_healthy_seconds=s.min_healthy_seconds,
        healthy_deadline_seconds=s.healthy_deadline_seconds,
        step_deadline_seconds=s.step_deadline_seconds,
        max_failures_per_wave=s.max_failures_per_wave,
        max_failures_total=s.max_failures_total, pause_seconds=s.pause_seconds,
        pause_until_promote=s.pause_until_promote, auto_rollback=s.auto_rollback)


def rollout(r: E.Rollout, *, with_hosts: bool = True) -> pb.Rollout:
    msg = pb.Rollout(
        id=r.id, version=r.version, state=rollout_state(r.state),
        target=pb.RolloutTarget(labels=dict(r.target_labels), hosts=list(r.target_hosts)),
        strategy=strategy(r.strategy), seed=r.seed, service=r.service,
        include_hub=r.include_hub, counts=counts(E.counts(r)), current_wave=r.current_wave,
        created_unix=r.created_at, updated_unix=r.updated_at, finished_unix=r.finished_at,
        message=r.message, next_event_index=r.next_event, resume_at_unix=r.resume_at,
        description=r.description, awaiting_promote=r.awaiting_promote,
        start_stopped=r.start_stopped)
    msg.packages.extend(
        pb.PackageCheck(service=p.service, url=p.url, available=p.available,
                        message=p.message, hosts=list(p.hosts), checked=p.checked,
                        package=p.package, asked=p.asked)
        for p in r.packages)
    for w, spec in enumerate(r.specs):
        hosts = r.wave_hosts(w)
        msg.waves.append(pb.Wave(
            index=w, spec=spec, hosts=[h.name for h in hosts],
            failures=sum(1 for h in hosts if h.failed),
            started=w <= r.current_wave and r.state != E.RolloutState.PLANNED,
            done=all(h.state in E.HOST_DONE for h in hosts)))
    if with_hosts:
        msg.hosts.extend(
            pb.RolloutHost(name=h.name, wave=h.wave, state=host_state(h.state),
                           from_version=h.from_version, operation_id=h.operation_id,
                           message=h.message, started_unix=h.started_at,
                           finished_unix=h.finished_at, attempts=h.attempts, step=h.step,
                           failed_step=h.failed_step, reason=h.reason, origin=h.origin)
            for h in r.hosts.values())
    return msg


def note(rollout_id: str, n: E.Note) -> pb.RolloutEvent:
    return pb.RolloutEvent(
        index=n.index, rollout_id=rollout_id, at_unix=n.at, kind=n.kind, host=n.host,
        wave=n.wave, message=n.message, state=rollout_state(n.state),
        host_state=host_state(n.host_state), counts=counts(n.counts),
        final=n.final)


def start_request(req: pb.StartRolloutRequest) -> StartRequest:
    s = req.strategy
    strat = make_strategy(
        waves=list(s.waves), max_parallel=s.max_parallel,
        min_healthy_seconds=s.min_healthy_seconds,
        healthy_deadline_seconds=s.healthy_deadline_seconds,
        step_deadline_seconds=s.step_deadline_seconds,
        max_failures_per_wave=s.max_failures_per_wave, max_failures_total=s.max_failures_total,
        pause_seconds=s.pause_seconds, pause_until_promote=s.pause_until_promote,
        auto_rollback=s.auto_rollback if s.HasField("auto_rollback") else True)
    return StartRequest(
        version=req.version, strategy=strat, labels=dict(req.target.labels),
        hosts=tuple(req.target.hosts), seed=s.seed if s.HasField("seed") else None,
        dry_run=req.dry_run, service=req.service, include_hub=req.include_hub,
        description=req.description, start_stopped=req.start_stopped)


AGENT_CONNECTED = pb.Host(agent_connected=True).SerializeToString()
HOSTS_FIELD = b"\x0a"  # ListHostsResponse.hosts: field 1, length-delimited


def _double_tag(field: str) -> bytes:
    """The key bytes of a Host double field (what precedes its 8 little-endian bytes)."""
    msg = pb.Host()
    setattr(msg, field, 1.0)
    return msg.SerializeToString()[:-8]


LAST_SEEN = _double_tag("last_seen_unix")
AGENT_HEARTBEAT = _double_tag("agent_last_heartbeat_unix")
LAST_CONTACT = _double_tag("last_contact_unix")
_DOUBLE = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def host_wire(view: HostView, inventory: Inventory, now: float) -> bytes:
    """`host()` serialized, kept on the view until the view changes. The fields that move
    with every contact or with the clock (the manager's keepalives every few seconds, the
    agent's heartbeats: last_seen_unix, agent_last_heartbeat_unix, last_contact_unix,
    agent_connected) are not in the kept bytes but appended to them (a later occurrence
    of a field wins when the message is read; zero, proto3's default, is left out as
    serialization leaves it out), so a fleet that is only alive keeps its bytes."""
    wire = view.wire
    if wire is None:
        msg = host(view, inventory, now)
        msg.last_seen_unix = msg.agent_last_heartbeat_unix = msg.last_contact_unix = 0.0
        msg.agent_connected = False
        wire = view.wire = msg.SerializeToString()
    tail: list[bytes] = []
    if view.last_seen:
        tail += (LAST_SEEN, _DOUBLE(view.last_seen))
    if view.agent_heartbeat:
        tail += (AGENT_HEARTBEAT, _DOUBLE(view.agent_heartbeat))
    contact = inventory.last_contact(view)
    if contact:
        tail += (LAST_CONTACT, _DOUBLE(contact))
    if inventory.agent_connected(view, now):
        tail.append(AGENT_CONNECTED)
    return wire + b"".join(tail) if tail else wire


def hosts_response(views: list[HostView], inventory: Inventory,
                   now: float) -> pb.ListHostsResponse:
    """ListHosts' answer built from each host's cached bytes: a fleet's worth of hosts
    costs a join and one parse instead of a message built field by field per host (at
    10,000 hosts, ~5 ms instead of ~70 ms)."""
    parts: list[bytes] = []
    for view in views:
        wire = host_wire(view, inventory, now)
        parts += (HOSTS_FIELD, _varint(len(wire)), wire)
    return pb.ListHostsResponse.FromString(b"".join(parts))


def host(view: HostView, inventory: Inventory, now: float | None = None) -> pb.Host:
    now = time.time() if now is None else now
    st = view.status
    e = view.entry
    return pb.Host(
        name=e.name, manager_address=e.manager_address, labels=e.labels, role=e.role,
        source=e.source, reachable=view.reachable,
        state=st.state if st is not None else mpb.SERVICE_STATE_UNSPECIFIED,
        version=view.version, last_seen_unix=view.last_seen, message=view.message,
        last_contact_unix=inventory.last_contact(view),
        service=st.name if st is not None else e.service,
        agent_address=view.agent_address, agent_version=view.agent_version,
        agent_last_heartbeat_unix=view.agent_heartbeat,
        agent_connected=inventory.agent_connected(view, now),
        update=st.update if st is not None else None, facts=view.facts)
