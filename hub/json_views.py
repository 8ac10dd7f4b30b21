"""The fleet and its rollouts as plain JSON: what `GET /api/hosts`, `/api/rollouts`,
`/api/rollouts/{id}` answer and what the fleet WebSocket sends (docs/DASHBOARD.md), one
shape for both, so the page and a curl user read the same thing.

Read-only views of the hub's own objects (`HostView`, the engine's `Rollout` and
`HostRun`, a manager's `ServiceStatus`); no I/O. States are their plain names
("RUNNING", "ROLLED_BACK"), times are Unix seconds (0 = never), and every host row of a
failed, unreachable or rolled-back host carries `failed_step` and `reason` in words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backendai.v1 import manager_pb2 as mpb
from hub import rollout_engine as E
from hub.inventory import HostView, Inventory
from hub.rollout_plan import Strategy

JSON = dict[str, Any]

SERVICE_STATES = {value: name.removeprefix("SERVICE_STATE_")
                  for name, value in mpb.ServiceState.items()}
SERVICE_STATE_NAMES = frozenset(SERVICE_STATES.values())


def service_state(state: int) -> str:
    """"RUNNING", "STOPPED", ... ("UNSPECIFIED" before the first status)."""
    return SERVICE_STATES.get(state, "UNSPECIFIED")


def update_summary(u: mpb.UpdateSummary) -> JSON:
    return {"running_operation_id": u.running_operation_id,
            "running_version": u.running_version, "running_step": u.running_step,
            "last_operation_id": u.last_operation_id, "last_outcome": u.last_outcome,
            "last_version": u.last_version, "last_message": u.last_message}


def service(st: mpb.ServiceStatus) -> JSON:
    """One service as its manager reports it (a host page row)."""
    return {"name": st.name, "state": service_state(st.state), "pid": st.pid or None,
            "uptime_seconds": round(st.uptime_seconds, 3), "restarts": st.restarts,
            "exit_code": st.exit_code if st.HasField("exit_code") else None,
            "version": st.version, "package": st.package, "backend": st.backend,
            "message": st.message, "state_since": st.state_since_unix,
            "desired": st.desired, "health": st.health, "health_message": st.health_message,
            "update": update_summary(st.update)}


def host(view: HostView, inventory: Inventory, now: float) -> JSON:
    """One host of the fleet table: its manager's view of the primary service, the
    agent's heartbeats, labels."""
    st, e = view.status, view.entry
    return {
        "name": e.name, "role": e.role, "labels": dict(e.labels), "source": e.source,
        "manager_address": e.manager_address, "reachable": view.reachable,
        "service": st.name if st is not None else e.service,
        "state": service_state(st.state) if st is not None else "UNSPECIFIED",
        "health": st.health if st is not None else "",
        "version": view.version, "pid": (st.pid or None) if st is not None else None,
        "state_since": st.state_since_unix if st is not None else 0.0,
        "restarts": st.restarts if st is not None else 0,
        # the last contact: the manager's stream (a change or a keepalive) or the
        # agent's heartbeat, as gRPC's Host.last_contact_unix
        "last_seen": inventory.last_contact(view), "message": view.message,
        # null until the manager ran an update (most hosts, most of the time)
        "update": update_summary(st.update) if st is not None and (
            st.update.running_operation_id or st.update.last_operation_id) else None,
        # null while no agent ever registered from this host
        "agent": {"address": view.agent_address, "version": view.agent_version,
                  "last_heartbeat": view.agent_heartbeat,
                  "connected": inventory.agent_connected(view, now)}
        if view.agent_heartbeat or view.agent_address else None,
    }


def facts(view: HostView) -> JSON | None:
    f = view.facts
    if f is None:
        return None
    return {"hostname": f.hostname, "platform": f.platform, "cpu_count": f.cpu_count,
            "cpu_percent": round(f.cpu_percent, 1), "load1": f.load1, "load5": f.load5,
            "load15": f.load15, "memory_total_bytes": f.memory_total_bytes,
            "memory_available_bytes": f.memory_available_bytes, "disk_path": f.disk_path,
            "disk_total_bytes": f.disk_total_bytes, "disk_free_bytes": f.disk_free_bytes,
            "boot_time": f.boot_time_unix}


# ---------------------------------------------------------------- rollouts

def counts(c: E.Counts) -> JSON:
    return {"total": c.total, "pending": c.pending, "in_progress": c.in_progress,
            "succeeded": c.succeeded, "failed": c.failed, "unreachable": c.unreachable,
            "rolled_back": c.rolled_back, "rollback_failed": c.rollback_failed,
            "skipped": c.skipped}


def strategy(s: Strategy) -> JSON:
    return {"waves": list(s.waves), "max_parallel": s.max_parallel,
            "min_healthy_seconds": s.min_healthy_seconds,
            "healthy_deadline_seconds": s.healthy_deadline_seconds,
            "step_deadline_seconds": s.step_deadline_seconds,
            "max_failures_per_wave": s.max_failures_per_wave,
            "max_failures_total": s.max_failures_total, "pause_seconds": s.pause_seconds,
            "pause_until_promote": s.pause_until_promote, "auto_rollback": s.auto_rollback}


def host_run(h: E.HostRun) -> JSON:
    """One row of a rollout's host table. `waiting`: an operation this rollout did not
    start runs on the host and the rollout waits for it (its id and the origin its
    manager reports, "" for an operator's request); `stopped`: SKIPPED because the
    release was installed but left stopped (the operator had stopped the service)."""
    return {"name": h.name, "wave": h.wave, "state": h.state.value, "step": h.step,
            "from_version": h.from_version, "operation_id": h.operation_id,
            "message": h.message, "started": h.started_at, "finished": h.finished_at,
            "attempts": h.attempts, "failed_step": h.failed_step, "reason": h.reason,
            "origin": h.origin, "stopped": h.stopped,
            "waiting": {"operation_id": h.waiting_for, "origin": h.waiting_origin}
            if h.waiting_for else None}


def waves(r: E.Rollout) -> list[JSON]:
    """Per-wave progress: its hosts' states counted, and whether it started / is done."""
    out: list[JSON] = []
    by_wave: dict[int, list[E.HostRun]] = {w: [] for w in range(len(r.specs))}
    for h in r.hosts.values():
        by_wave.setdefault(h.wave, []).append(h)
    for w, spec in enumerate(r.specs):
        hosts = by_wave.get(w, [])
        tally: dict[str, int] = {}
        for h in hosts:
            tally[h.state.value] = tally.get(h.state.value, 0) + 1
        out.append({"index": w, "spec": spec, "size": len(hosts),
                    "hosts": [h.name for h in hosts],
                    "states": tally, "failures": sum(1 for h in hosts if h.failed),
                    "started": w <= r.current_wave and r.state != E.RolloutState.PLANNED,
                    "done": bool(hosts) and all(h.state in E.HOST_DONE for h in hosts)})
    return out


def rollout_summary(r: E.Rollout) -> JSON:
    """A rollout without its host rows (lists, the fleet WebSocket's rollouts)."""
    return {"id": r.id, "version": r.version, "state": r.state.value, "active": r.active,
            "service": r.service, "include_hub": r.include_hub,
            "description": r.description, "created": r.created_at, "updated": r.updated_at,
            "finished": r.finished_at, "message": r.message, "current_wave": r.current_wave,
            "wave_count": r.wave_count, "awaiting_promote": r.awaiting_promote,
            "resume_at": r.resume_at, "seed": r.seed, "next_event": r.next_event,
            "start_stopped": r.start_stopped,
            "counts": counts(E.counts(r)), "strategy": strategy(r.strategy),
            "target": {"labels": dict(r.target_labels), "hosts": list(r.target_hosts)}}


def rollout(r: E.Rollout) -> JSON:
    """A rollout with its waves and every host row; a dry run's plan too (then `id` is
    "" and `state` "PLANNED"), with the store's answer in `packages` when the hub
    checked it."""
    out = rollout_summary(r)
    out["waves"] = waves(r)
    out["hosts"] = [host_run(h) for h in r.hosts.values()]
    packages = getattr(r, "packages", None)
    if packages:
        out["packages"] = [_plain(p) for p in packages]
    return out


def note(n: E.Note) -> JSON:
    return {"index": n.index, "at": n.at, "kind": n.kind, "host": n.host, "wave": n.wave,
            "message": n.message, "state": n.state.value,
            "host_state": n.host_state.value if n.host_state else None, "final": n.final}


def _plain(value: object) -> Any:
    """A value the JSON encoder takes (engine dataclasses and enums as plain data)."""
    return E.as_dict(value)


def hosts(views: Iterable[HostView], inventory: Inventory, now: float) -> list[JSON]:
    return [host(v, inventory, now) for v in views]
