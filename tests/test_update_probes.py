"""The health gate's probe kinds through real managers: gRPC health with a version
method, TCP connect, and a command; a wrong version or an unhealthy service rolls back."""

from __future__ import annotations

import pytest

from tests.conftest import PY
from tests.update_support import Env, assert_on, reserved_port, started, steps, update, watch_op

pytestmark = pytest.mark.slow

FETCH_HEALTH = ("import os, sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                "'http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/health', timeout=3)"
                ".read().decode())")




def probe_config(kind: str, env: Env, gport: int) -> dict:
    if kind == "grpc":
        return {"health_probe": "grpc", "health_target": f"127.0.0.1:{gport}",
                "health_version_method": "test.Info/Get",
                "env": {"HEALTH_PORT": str(env.port), "GRPC_PORT": str(gport), "AI_PYTHON": PY}}
    if kind == "tcp":
        return {"health_probe": "tcp", "health_target": f"127.0.0.1:{env.port}"}
    return {"health_probe": "command", "health_command": [PY, "-c", FETCH_HEALTH],
            "env": {"HEALTH_PORT": str(env.port), "AI_PYTHON": PY}}


@pytest.mark.parametrize(("kind", "behavior", "outcome", "match"), [
    ("grpc", None, "succeeded", "healthy (grpc probe)"),
    ("grpc", {"report_version": "0.0.bad"}, "rolled_back", "reports version '0.0.bad'"),
    ("grpc", {"unhealthy": True}, "rolled_back", "NOT_SERVING"),
    ("tcp", None, "succeeded", "healthy (tcp probe)"),
    ("command", None, "succeeded", "healthy (command probe)"),
    ("command", {"report_version": "0.0.bad"}, "rolled_back", "reports version '0.0.bad'"),
])
def test_probe_kinds(env, kind, behavior, outcome, match):
    env.build("1.0.0")
    env.build("1.1.0", behavior=behavior)
    env.install("1.0.0")
    with reserved_port() as gport:
        m = env.manager(healthy_deadline=3.0, **probe_config(kind, env, gport))
        started(env, m)
        events = watch_op(m, update(m, "1.1.0"))
        assert events[-1].outcome == outcome, (steps(events), events[-1].message)
        health = next(e for e in events if e.step == "health" and e.status != "started")
        assert match in health.message, health.message
        assert_on(env, m, "1.1.0" if outcome == "succeeded" else "1.0.0")
