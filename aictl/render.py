"""How aictl shows hosts and rollouts: plain tables, and a live view of a rollout
(per-wave progress bars and a host table, redrawn on a TTY; one line per event
otherwise; JSON lines with --json). Pure formatting of the hub's messages."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

BAR_WIDTH = 24
MAX_HOST_ROWS = 40  # the live view shows the hosts in progress first, then the rest
MESSAGE_WIDTH = 60  # a table's message column
ELLIPSIS = "…"


def clip(text: str, width: int) -> str:
    """`text` in at most `width` characters; a cut one ends with "…"."""
    if len(text) <= width:
        return text
    return text[:max(0, width - 1)] + ELLIPSIS if width > 0 else ""


def _enum(msg_enum: Any, value: int, prefix: str) -> str:
    try:
        name: str = msg_enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def rollout_state(value: int) -> str:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    return _enum(hpb.RolloutState, value, "ROLLOUT_STATE_")


def host_state(value: int) -> str:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    return _enum(hpb.HostRolloutState, value, "HOST_ROLLOUT_STATE_")


def service_state(value: int) -> str:
    from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415

    return _enum(mpb.ServiceState, value, "SERVICE_STATE_")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def ago(unix: float, now: float | None = None) -> str:
    if not unix:
        return "never"
    secs = max(0.0, (time.time() if now is None else now) - unix)
    if secs < 60:
        return f"{secs:.0f}s ago"
    if secs < 3600:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def hosts_table(hosts: Sequence[Any]) -> str:
    """LAST SEEN is the last contact (a status keepalive or a heartbeat counts), not
    the last change."""
    if not hosts:
        return "no hosts"
    now = time.time()
    return table(
        ("HOST", "ROLE", "REACHABLE", "STATE", "VERSION", "LAST SEEN", "AGENT", "LABELS"),
        [(h.name, h.role, "yes" if h.reachable else "NO", service_state(h.state),
          h.version or "-", ago(h.last_contact_unix or h.last_seen_unix, now),
          "up" if h.agent_connected else "-",
          clip(",".join(f"{k}={v}" for k, v in sorted(h.labels.items())) or "-",
               MESSAGE_WIDTH))
         for h in hosts])


def host_services(hosts: Sequence[Any]) -> str:
    blocks = []
    for h in hosts:
        if not h.reachable:
            blocks.append(f"{h.host}: UNREACHABLE ({h.error})")
            continue
        rows = [(s.name, service_state(s.state), s.pid or "-", s.version or "-",
                 f"{s.uptime_seconds:.0f}s" if s.pid else "-", s.restarts,
                 clip(s.message or "", MESSAGE_WIDTH))
                for s in h.services]
        blocks.append(f"{h.host}:\n" + table(
            ("  SERVICE", "STATE", "PID", "VERSION", "UPTIME", "RESTARTS", "MESSAGE"),
            [(f"  {r[0]}", *r[1:]) for r in rows]))
    return "\n".join(blocks) if blocks else "no hosts"


def counts_line(c: Any) -> str:
    parts = [f"{c.succeeded}/{c.total} succeeded"]
    for label, value in (("in progress", c.in_progress), ("pending", c.pending),
                         ("failed", c.failed), ("unreachable", c.unreachable),
                         ("rolled back", c.rolled_back), ("rollback failed", c.rollback_failed),
                         ("skipped", c.skipped)):
        if value:
            parts.append(f"{value} {label}")
    return ", ".join(parts)


def summary(r: Any) -> str:
    line = f"rollout {r.id or '(dry run)'}: version {r.version}, {rollout_state(r.state)}"
    line += f" — {counts_line(r.counts)}"
    if r.message:
        line += f"\n  {r.message}"
    return line


def wave_label(r: Any, w: Any) -> str:
    """"hub" for the hub's own wave, "canary" for the first wave of agents."""
    if w.spec == "hub":
        return "hub"
    first = next((x.index for x in r.waves if x.spec != "hub"), 0)
    return "canary" if w.index == first else f"wave {w.index}"


def plan(r: Any) -> str:
    lines = [f"plan for version {r.version} (seed {r.seed}): {len(r.hosts)} hosts, "
             f"{len(r.waves)} waves"]
    for w in r.waves:
        label = wave_label(r, w)
        lines.append(f"  {label:<8} {w.spec:>5}  {len(w.hosts):>4} hosts: "
                     + ", ".join(w.hosts))
    return "\n".join(lines)


def bar(marks: Sequence[str], width: int = BAR_WIDTH) -> str:
    """A progress bar of one mark per host, stretched to width: '#' succeeded,
    'x' failed or unreachable, 'r' rolled back, '-' skipped, '>' in progress, '.' pending."""
    if not marks:
        return "[" + " " * width + "]"
    cells = "".join(marks[i * len(marks) // width] for i in range(width))
    return "[" + cells + "]"


def _mark(state: int) -> str:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    marks: dict[int, str] = {
        hpb.HOST_ROLLOUT_STATE_SUCCEEDED: "#", hpb.HOST_ROLLOUT_STATE_FAILED: "x",
        hpb.HOST_ROLLOUT_STATE_UNREACHABLE: "x", hpb.HOST_ROLLOUT_STATE_ROLLBACK_FAILED: "x",
            hpb.HOST_ROLLOUT_STATE_ROLLED_BACK: "r", hpb.HOST_ROLLOUT_STATE_SKIPPED: "-",
            hpb.HOST_ROLLOUT_STATE_PENDING: "."}
    return marks.get(state, ">")


def waves_block(r: Any) -> list[str]:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    by_wave: dict[int, list[Any]] = {}
    for h in r.hosts:
        by_wave.setdefault(h.wave, []).append(h)
    lines = []
    for w in r.waves:
        hosts = sorted(by_wave.get(w.index, []), key=lambda h: "#xr>-.".find(_mark(h.state)))
        ok = sum(1 for h in hosts if h.state == hpb.HOST_ROLLOUT_STATE_SUCCEEDED)
        mark = ">" if w.index == r.current_wave and not r.finished_unix else " "
        lines.append(f"{mark} {wave_label(r, w):<7} {bar([_mark(h.state) for h in hosts])} "
                     f"{ok}/{len(hosts)} ok" + (f", {w.failures} failed" if w.failures else ""))
    return lines


def host_rows(r: Any, limit: int = MAX_HOST_ROWS) -> str:
    from backendai.v1 import hub_pb2 as hpb  # noqa: PLC0415

    active = {hpb.HOST_ROLLOUT_STATE_UPDATING, hpb.HOST_ROLLOUT_STATE_VERIFYING,
              hpb.HOST_ROLLOUT_STATE_ROLLING_BACK}
    hosts = sorted(r.hosts, key=lambda h: (h.state not in active,
                                           h.state == hpb.HOST_ROLLOUT_STATE_PENDING,
                                           h.wave, h.name))
    rows = [(h.name, h.wave, host_state(h.state), h.from_version or "-", h.step or "-",
             clip(h.message, MESSAGE_WIDTH)) for h in hosts[:limit]]
    text = table(("HOST", "WAVE", "STATE", "FROM", "STEP", "MESSAGE"), rows)
    if len(hosts) > limit:
        text += f"\n… and {len(hosts) - limit} more hosts"
    return text


def detail(r: Any) -> str:
    head = summary(r)
    return "\n".join([head, *waves_block(r), "", host_rows(r, limit=10_000)])


def rollouts_table(rollouts: Sequence[Any]) -> str:
    """OUTCOMES counts as `rollout show` does (counts_line): the same words, the same
    numbers."""
    if not rollouts:
        return "no rollouts"
    return table(("ID", "VERSION", "STATE", "OUTCOMES", "CREATED"),
                 [(r.id, r.version, rollout_state(r.state),
                   clip(counts_line(r.counts), 2 * MESSAGE_WIDTH), ago(r.created_unix))
                  for r in rollouts])


def event_line(e: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(e.at_unix))
    where = f" {e.host}" if e.host else (f" wave {e.wave}" if e.wave >= 0 else "")
    return f"{stamp} #{e.index:<4} {e.kind:<22}{where}  {e.message}".rstrip()


class LiveView:
    """Shows a rollout as events arrive. On a TTY the screen is redrawn (bars + host
    table + the last events); otherwise each event is one line; with json_lines, one
    JSON object per event."""

    def __init__(self, out: TextIO, *, json_lines: bool = False) -> None:
        self.out = out
        self.json_lines = json_lines
        self.tty = out.isatty() and not json_lines
        self.recent: list[str] = []
        self._last_draw = 0.0

    def wants_rollout(self, event: Any) -> bool:
        """Whether this event needs a fresh copy of the rollout (the TTY view only)."""
        return self.tty and (event.final or time.monotonic() - self._last_draw > 0.2)

    def note(self, text: str) -> None:
        if self.json_lines:
            self.out.write(json.dumps({"note": text}) + "\n")
        else:
            self.recent.append(text)
            if not self.tty:
                self.out.write(text + "\n")
        self.out.flush()

    def show(self, r: Any, event: Any | None) -> None:
        if self.json_lines:
            if event is not None:
                from google.protobuf import json_format  # noqa: PLC0415

                self.out.write(json.dumps(json_format.MessageToDict(
                    event, preserving_proto_field_name=True)) + "\n")
                self.out.flush()
            return
        if event is not None:
            self.recent = [*self.recent[-7:], event_line(event)]
        if not self.tty:
            if event is None:
                self.out.write(summary(r) + "\n")
            else:
                self.out.write(self.recent[-1] + "\n")
            self.out.flush()
            return
        self._last_draw = time.monotonic()
        width = shutil.get_terminal_size().columns
        screen = [summary(r), *waves_block(r), "", host_rows(r), "", *self.recent]
        lines = [clip(line, width) for block in screen for line in block.split("\n")]
        self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        self.out.flush()

    def finish(self, r: Any) -> None:
        if self.json_lines:
            return
        if self.tty:
            self.show(r, None)
        self.out.write(summary(r) + "\n")
        self.out.flush()


def packages(r: Any) -> str:
    """The dry run's store check: one line per distinct package."""
    if not r.packages:
        return "store: not checked"
    lines = []
    for p in r.packages:
        what = p.package or p.service or "(unknown package)"
        hosts = f"{len(p.hosts)} host{'s' if len(p.hosts) != 1 else ''}"
        if not p.checked:
            lines.append(f"store: {what} ({hosts}): not checked — {p.message}")
        elif p.available:
            lines.append(f"store: {what} {r.version} available ({hosts}) at {p.url}")
        else:
            lines.append(f"store: {what} {r.version} MISSING ({hosts}) at "
                         f"{p.url or '(no URL)'}: {p.message}")
    return "\n".join(lines)


# ---- one manager (aictl --manager) -----------------------------------------------------

def service_line(st: Any) -> str:
    """"agent: RUNNING pid 4242, version 1.1.0" and the service's message, if any."""
    parts = [f"{st.name}: {service_state(st.state).upper()}"]
    if st.pid:
        parts.append(f"pid {st.pid}")
    if st.version:
        parts.append(f"version {st.version}")
    text = parts[0] + (" " + ", ".join(parts[1:]) if len(parts) > 1 else "")
    return text + (f" ({clip(st.message, 2 * MESSAGE_WIDTH)})" if st.message else "")


def services_table(services: Sequence[Any]) -> str:
    if not services:
        return "no services"
    return table(("SERVICE", "STATE", "PID", "VERSION", "UPTIME", "RESTARTS", "HEALTH",
                  "UPDATE", "MESSAGE"),
                 [(s.name, service_state(s.state).upper(), s.pid or "-", s.version or "-",
                   f"{s.uptime_seconds:.0f}s" if s.pid else "-", s.restarts,
                   s.health or "-", _update_cell(s.update),
                   clip(s.message or "", MESSAGE_WIDTH)) for s in services])


def _update_cell(u: Any) -> str:
    if u.running_operation_id:
        return f"to {u.running_version or '?'} at {u.running_step or 'start'}"
    if u.last_outcome:
        return f"{u.last_version}: {u.last_outcome}"
    return "-"


def releases_table(releases: Sequence[Any]) -> str:
    if not releases:
        return "no releases on disk"
    return table(("VERSION", "", "INSTALLED"),
                 [(r.version, "current" if r.current else "previous" if r.previous else "",
                   time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.installed_unix))
                   if r.installed_unix else "-") for r in releases])


def update_event_line(e: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(e.at_unix)) if e.at_unix else "--:--:--"
    took = f" ({e.elapsed_seconds:.1f}s)" if e.elapsed_seconds else ""
    tail = f" — {e.outcome}" if e.final and e.outcome else ""
    return f"{stamp} {e.step:<16} {e.status:<8}{took} {e.message}".rstrip() + tail


def operation_report(op: Any) -> str:
    head = (f"operation {op.operation_id}: {op.kind} {op.from_version or '(none)'} -> "
            f"{op.to_version} on {op.service}, {op.state}"
            + (f", {op.outcome}" if op.outcome else "")
            + (f" (origin {op.origin})" if op.origin else ""))
    if op.message:
        head += f"\n  {op.message}"
    rows = [(s.step, s.status, f"{s.elapsed_seconds:.1f}s" if s.status != "started" else "…",
             clip(s.message, MESSAGE_WIDTH)) for s in op.steps]
    return head + "\n" + table(("STEP", "STATUS", "TOOK", "MESSAGE"), rows)


def reload_summary(resp: Any) -> str:
    parts = [f"{label}: {', '.join(names) if names else '-'}"
             for label, names in (("added", resp.added), ("removed", resp.removed),
                                  ("changed", resp.changed), ("unchanged", resp.unchanged))]
    return "\n".join([*([resp.message] if resp.message else []), *parts])
