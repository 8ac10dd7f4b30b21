"""kill -9 of the manager at every step of an update (and of its rollback): the next
start finishes or rolls back the operation, the host ends on the old or the new
version, running, nothing is left half-installed, and the outcome shows in status.

The crash is a fault injected into a real ai-manager started through the test-only
entry point tests/fixtures/crashing_manager.py: it os._exit()s right after journaling
that step's start, as if killed there.
"""

from __future__ import annotations

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import assert_eventually
from tests.update_support import (
    assert_on,
    running_version_safe,
    started,
    steps,
    update,
    watch_op,
)

pytestmark = pytest.mark.slow

CASES = [
    # (crash at, release misbehaves, expected outcome, version the host ends on)
    ("download", False, "failed", "1.0.0"),
    ("verify", False, "failed", "1.0.0"),
    ("stage", False, "failed", "1.0.0"),
    ("stop", False, "rolled_back", "1.0.0"),
    ("switch", False, "rolled_back", "1.0.0"),
    ("start", False, "rolled_back", "1.0.0"),
    ("health", False, "rolled_back", "1.0.0"),
    ("commit", False, "succeeded", "1.1.0"),
    ("rollback_stop", True, "rolled_back", "1.0.0"),
    ("rollback_switch", True, "rolled_back", "1.0.0"),
    ("rollback_start", True, "rolled_back", "1.0.0"),
    ("rollback_health", True, "rolled_back", "1.0.0"),
]




@pytest.mark.parametrize(("step", "bad", "outcome", "ends_on"), CASES,
                         ids=[c[0] for c in CASES])
def test_kill9_at_every_step(env, step, bad, outcome, ends_on):
    env.build("1.0.0")
    env.build("1.1.0", behavior={"crash": True} if bad else None)
    env.install("1.0.0")
    m = env.manager(crash_at=step)
    started(env, m)
    code = grpc.StatusCode.OK
    try:
        op = update(m, "1.1.0")
    except grpc.RpcError as exc:
        # The hook can kill the manager before its reply leaves (the operation runs on
        # the event loop, the reply is sent from a gRPC thread): the id is in status.
        code, op = exc.code(), ""
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), code
    assert m.proc is not None
    assert m.proc.wait(30) == 137, m.logs()
    assert "update.test_crash" in m.logs()  # the injected fault, not some other death
    m._close_channel()
    m.start()  # the shipped entry point
    if not op:
        summary = m.status().update  # the restarted manager resumes it, or has finished it
        op = summary.running_operation_id or summary.last_operation_id
    assert len(op) == 32
    events = watch_op(m, op)
    final = events[-1]
    assert final.outcome == outcome, (steps(events), final.message)
    # The journal shows the step that was interrupted, started but never finished.
    assert f"{step}:started" in steps(events)
    if outcome != "failed":
        assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING, 20)
    assert_on(env, m, ends_on)
    st = m.status()
    assert st.update.last_operation_id == op and st.update.last_outcome == outcome
    assert st.update.running_operation_id == ""
    on_disk = env.on_disk()
    assert "1.0.0" in on_disk and all(not v.startswith(".") for v in on_disk)


def test_real_kill9_mid_download_and_mid_health(env):
    """SIGKILL from outside (no hook) while bytes are flowing, then while the new release
    is in its health gate."""
    env.build("1.0.0")
    env.build("1.1.0", blob_bytes=2 << 20)
    env.install("1.0.0")
    m = env.manager(min_healthy_time=3.0, healthy_deadline=20.0)
    pid = started(env, m)
    env.server.throttle = 0.05  # ~1.3 MB/s: the download takes a few seconds
    op = update(m, "1.1.0")
    part = env.install_root / ".downloads" / op / "agent-1.1.0.tar.gz"
    assert_eventually(lambda: part.exists() and part.stat().st_size > 0, 20,
                      what="download in progress")
    m.kill9()
    env.server.throttle = 0.0
    m.start()
    final = watch_op(m, op)[-1]
    assert final.outcome == "failed" and "during download" in final.message
    assert m.status().pid == pid  # re-adopted, never restarted
    assert_on(env, m, "1.0.0")

    op = update(m, "1.1.0")
    for ev in m.stub().WatchUpdate(pb.WatchUpdateRequest(operation_id=op), timeout=60):
        if (ev.step, ev.status) == ("health", "started"):
            break
    assert running_version_safe(env.port) == "1.1.0"  # the new release is up, being gated
    m.kill9()
    m.start()
    events = watch_op(m, op)
    assert events[-1].outcome == "rolled_back", steps(events)
    assert "interrupted by a manager restart during health" in events[-1].message
    assert_on(env, m, "1.0.0")
    assert m.status().update.last_outcome == "rolled_back"
