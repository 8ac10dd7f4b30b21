"""Issue 15's config keys: instances, base_port, [env], after, [services.health]; and the
pure start-order graph and reload diff. Every bad value fails naming the key."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from backendai.errors import ConfigError
from manager import config, start_order
from manager.config_diff import diff, fixed_change
from manager.supervision.states import ServiceStatus, State, count_states
from manager.supervision.units import Readiness, readiness


def doc(*services: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"state_dir": "/var/lib/x", "services": list(services) or [svc("a")], **top}


def svc(name: str, **over: Any) -> dict[str, Any]:
    return {"name": name, "command": ["/bin/true"], **over}


def test_instances_expand_with_instance_and_port_substituted():
    cfg = config.parse(doc(svc("web", command=["srv", "--port={port}", "--n={instance}",
                                               "{other}"], instances=3, base_port=8000,
                               env={"PORT": "{port}", "X": "{instance}"},
                               health={"http": "http://127.0.0.1:{port}/health"})))
    assert [s.name for s in cfg.services] == ["web-1", "web-2", "web-3"]
    third = cfg.services[2]
    assert third.command == ("srv", "--port=8002", "--n=3", "{other}")
    assert dict(third.env) == {"PORT": "8002", "X": "3"}
    assert third.health_check is not None
    assert third.health_check.http == "http://127.0.0.1:8002/health"
    assert (third.instance_of, third.instance) == ("web", 3)
    assert cfg.primary.name == "web-1"
    assert [s.name for s in cfg.members("web")] == ["web-1", "web-2", "web-3"]
    assert [s.name for s in cfg.members("web-2")] == ["web-2"]
    assert cfg.members("nope") == ()


def test_without_instances_placeholders_stay_literal():
    cfg = config.parse(doc(svc("a", command=["echo", "{port}", "{instance}"])))
    assert cfg.primary.command == ("echo", "{port}", "{instance}")
    assert (cfg.primary.instance_of, cfg.primary.instance) == ("", 0)


def test_global_env_goes_under_each_services_own():
    cfg = config.parse(doc(svc("a", env={"B": "mine"}), svc("b"),
                           env={"A": "all", "B": "all"}))
    assert dict(cfg.services[0].env) == {"A": "all", "B": "mine"}
    assert dict(cfg.services[1].env) == {"A": "all", "B": "all"}
    assert dict(cfg.env) == {"A": "all", "B": "all"}


def test_after_resolves_instances_and_is_kept_in_status_order():
    cfg = config.parse(doc(svc("db"), svc("cache", instances=2),
                           svc("web", after=["cache", "db"])))
    assert cfg.service("web").after == ("cache-1", "cache-2", "db")
    assert cfg.graph()["db"] == ()


@pytest.mark.parametrize(("services", "top", "needle"), [
    ([svc("a", instances=0)], {}, "services[0].instances: must be between 1 and 256, got 0"),
    ([svc("a", instances=-1)], {}, "services[0].instances: must be between 1 and 256"),
    ([svc("a", instances=10_000)], {}, "services[0].instances: must be between 1 and 256, "
                                       "got 10000"),
    ([svc("a", instances=2.0)], {}, "services[0].instances: must be an integer"),
    ([svc("a", instances=True)], {}, "services[0].instances: must be an integer"),
    ([svc("a", instances=200), svc("b", instances=200), svc("c", instances=200),
      svc("d", instances=200), svc("e", instances=201)], {},
     "services[4].instances: more than 1000 services in all"),
    ([svc("a", instances=3, base_port=65534)], {},
     "services[0].base_port: 65534 + 3 instances reaches port 65536, beyond 65535"),
    ([svc("a", instances=2, base_port=0)], {}, "services[0].base_port: must be between 1"),
    ([svc("a", instances=2, base_port=70000)], {}, "services[0].base_port: must be between"),
    ([svc("a", base_port=8000)], {}, "services[0].base_port: only with instances"),
    ([svc("a", instances=2, command=["x", "{port}"])], {},
     "services[0].command: uses {port}, which needs base_port"),
    ([svc("a", instances=2, env={"P": "{port}"})], {},
     "services[0].env: uses {port}, which needs base_port"),
    ([svc("a", instances=2, health={"tcp": "127.0.0.1:{port}"})], {},
     "services[0].health.tcp: uses {port}, which needs base_port"),
    ([svc("a" * 62, instances=10)], {}, "services[0].instances: instance names like"),
    ([svc("a", instances=2, backend="systemd")], {},
     "services[0].instances: only for backend \"process\""),
    ([svc("web", instances=2), svc("web-2")], {}, "services[1].name: duplicate service "
                                                  "name 'web-2'"),
    ([svc("web-2"), svc("web", instances=2)], {}, "services[1].name: duplicate instance "
                                                  "name 'web-2'"),
    ([svc("a", after=["nope"])], {}, "services[0].after: no service named 'nope'"),
    ([svc("a", after="b"), svc("b")], {}, "services[0].after: must be a list"),
    ([svc("a", after=["b", "b"]), svc("b")], {}, "services[0].after: names a service twice"),
    ([svc("a", after=["../x"])], {}, "services[0].after: a service name is"),
    ([svc("a", after=["b"]), svc("b", after=["c"]), svc("c", after=["a"])], {},
     "services[0].after: a start-order cycle: a -> b -> c -> a"),
    ([svc("a", after=["a"])], {}, "services[0].after: a start-order cycle: a -> a"),
    ([svc("w", instances=2, after=["w"])], {}, "a start-order cycle: w-1 -> w-1"),
    ([svc("a")], {"env": {"1X": "y"}}, "env: bad entry '1X'"),
    ([svc("a")], {"env": "A=1"}, "env: expected a table"),
])
def test_bad_supervision_keys_name_the_key(services, top, needle):
    with pytest.raises(ConfigError) as err:
        config.parse(doc(*services, **top))
    assert needle in str(err.value)


@pytest.mark.parametrize(("health", "needle"), [
    ({}, "services[0].health: exactly one of http, tcp, exec, grpc is required, got none"),
    ({"http": "http://x/", "tcp": "x:1"}, "exactly one of http, tcp, exec, grpc is required, "
                                          "got http, tcp"),
    ({"http": "ftp://x/"}, "services[0].health.http: must be an http:// or https:// URL"),
    ({"http": "file:///etc/passwd"}, "services[0].health.http: must be an http:// or https"),
    ({"http": "javascript:alert(1)"}, "services[0].health.http: must be an http://"),
    ({"http": "http:///nohost"}, "services[0].health.http: must name a host"),
    ({"http": "http://x:99999/"}, "services[0].health.http: not a usable URL"),
    ({"http": "http://x/" + "a" * 3000}, "services[0].health.http: too long"),
    ({"http": "http://x/", "status": "600"}, "services[0].health.status: must be a status "
                                             "code or a range"),
    ({"http": "http://x/", "status": "399-200"}, "services[0].health.status:"),
    ({"http": "http://x/", "status": "abc"}, "services[0].health.status:"),
    ({"tcp": "x:1", "status": 200}, "services[0].health.status: only for an http check"),
    ({"tcp": "x:1", "body": "ok"}, "services[0].health.body: only for an http check"),
    ({"tcp": "x:1", "grpc_service": "s"}, "services[0].health.grpc_service: only for a grpc"),
    ({"tcp": "nohost"}, "services[0].health.tcp: expected \"HOST:PORT\""),
    ({"tcp": "x:0"}, "services[0].health.tcp: expected \"HOST:PORT\" with port 1-65535"),
    ({"grpc": "x:70000"}, "services[0].health.grpc: expected \"HOST:PORT\""),
    ({"exec": []}, "services[0].health.exec: must be a non-empty list"),
    ({"exec": ["/nonexistent/check-bin"]}, "services[0].health.exec: the program "
                                           "'/nonexistent/check-bin' is not an executable"),
    ({"exec": ["no-such-check-program-xyz"]}, "is not found on PATH"),
    ({"tcp": "x:1", "interval": 0}, "services[0].health.interval: must be between 0.05"),
    ({"tcp": "x:1", "timeout": -1}, "services[0].health.timeout: must be between"),
    ({"tcp": "x:1", "failures": 0}, "services[0].health.failures: must be between 1 and 1000"),
    ({"tcp": "x:1", "start_period": "5"}, "services[0].health.start_period: must be a number"),
    ({"tcp": "x:1", "on_unhealthy": "reboot"}, "services[0].health.on_unhealthy: must be one "
                                               "of restart, none"),
    ({"tcp": "x:1", "bogus": 1}, "services[0].health.bogus: unknown key"),
    ({"tcp": "127.0.0.1:{port}"}, "({port} and {instance} need `instances`)"),
])
def test_bad_health_checks_name_the_key(health, needle):
    with pytest.raises(ConfigError) as err:
        config.parse(doc(svc("a", health=health)))
    assert needle in str(err.value)


def test_health_check_defaults_and_each_kind():
    hc = config.parse(doc(svc("a", health={"http": "https://h.example/x?y=1"}))).primary
    assert hc.health_check is not None
    assert (hc.health_check.interval, hc.health_check.timeout, hc.health_check.failures,
            hc.health_check.start_period, hc.health_check.on_unhealthy,
            hc.health_check.status) == (10.0, 5.0, 3, 0.0, "restart", (200, 399))
    for table, kind in [({"tcp": "[::1]:80"}, "tcp"), ({"grpc": "h:1", "grpc_service": "x"},
                                                       "grpc"),
                        ({"exec": ["true"]}, "exec"), ({"exec": ["bin/check", "-q"]}, "exec"),
                        ({"http": "http://h/", "status": 204}, "http"),
                        ({"http": "http://h/", "status": "200-204", "body": "ok"}, "http")]:
        got = config.parse(doc(svc("a", health=table))).primary.health_check
        assert got is not None and got.kind == kind
    assert config.parse(doc(svc("a", health={"http": "http://h/", "status": "204"}))
                        ).primary.health_check.status == (204, 204)


# ---- the pure start order ---------------------------------------------------------------

G = {"web": ("db", "cache"), "cache": ("db",), "db": (), "worker": ("web",), "solo": ()}


def test_waves_start_dependencies_first_and_stop_in_reverse():
    assert start_order.waves(["worker", "web", "cache", "db", "solo"], G) == [
        ["db", "solo"], ["cache"], ["web"], ["worker"]]
    assert start_order.stop_waves(["db", "web"], G) == [["web"], ["db"]]
    assert start_order.waves(["web"], G) == [["web"]]  # outside the set: not waited here
    assert start_order.dependents("db", G) == ["web", "cache"]


def test_find_cycle_and_resolve():
    assert start_order.find_cycle(G) == []
    assert start_order.find_cycle({"a": ("b",), "b": ("c",), "c": ("b",)}) == ["b", "c", "b"]
    assert start_order.resolve(["web", "db"], ["db", "web-1", "web-2"],
                               {"web": ["web-1", "web-2"]}) == (["web-1", "web-2", "db"], "")
    assert start_order.resolve(["x"], ["db"], {})[1] == "x"


def st(state: State, health: str = "") -> ServiceStatus:
    return ServiceStatus(name="s", state=state, health=health)


def test_readiness_for_dependents():
    assert readiness(st(State.RUNNING), checked=False) is Readiness.UP
    assert readiness(st(State.RUNNING, "unknown"), checked=True) is Readiness.COMING
    assert readiness(st(State.RUNNING, "unhealthy"), checked=True) is Readiness.COMING
    assert readiness(st(State.RUNNING, "healthy"), checked=True) is Readiness.UP
    for s in (State.STARTING, State.BACKOFF):
        assert readiness(st(s), checked=False) is Readiness.COMING
    for s in (State.STOPPED, State.EXITED, State.FATAL, State.STOPPING):
        assert readiness(st(s), checked=False) is Readiness.DOWN


def test_counts_by_state():
    assert count_states([st(State.RUNNING), st(State.FATAL), st(State.RUNNING)]) == {
        "RUNNING": 2, "FATAL": 1}
    assert count_states([]) == {}


# ---- the pure reload diff ------------------------------------------------------------------

def test_diff_by_name():
    old = config.parse(doc(svc("a"), svc("b"), svc("c")))
    new = config.parse(doc(svc("a"), svc("b", command=["/bin/false"]), svc("d")))
    d = diff(old, new)
    assert (d.added, d.removed, d.changed, d.unchanged) == (["d"], ["c"], ["b"], ["a"])
    assert diff(old, old).empty
    # instances: more of them adds some, a changed spec changes all
    old = config.parse(doc(svc("a"), svc("w", instances=2)))
    new = config.parse(doc(svc("a"), svc("w", instances=3)))
    assert diff(old, new).added == ["w-3"] and diff(old, new).changed == []
    new = config.parse(doc(svc("a"), svc("w", instances=2), env={"X": "1"}))
    assert diff(old, new).changed == ["a", "w-1", "w-2"]


@pytest.mark.parametrize(("change", "needle"), [
    ({"http_listen": "127.0.0.1:9"}, "http_listen: cannot change by reload"),
    ({"grpc_listen": "127.0.0.1:9"}, "grpc_listen: cannot change by reload"),
    ({"state_dir": "/var/lib/y"}, "state_dir: cannot change by reload"),
    ({"log_level": "debug"}, "log_level: cannot change by reload"),
    ({"grpc_socket": "/run/x.sock"}, "grpc_socket: cannot change by reload"),
])
def test_fixed_keys_cannot_change(change, needle):
    old = config.parse(doc(svc("a")))
    assert fixed_change(old, old) == ""
    assert needle in fixed_change(old, config.parse({**doc(svc("a")), **change}))


def test_the_primary_service_cannot_change():
    old = config.parse(doc(svc("a"), svc("b")))
    new = config.parse(doc(svc("b"), svc("a")))
    assert fixed_change(old, new).startswith("services[0].name: the primary service cannot "
                                             "change by reload (it is 'a', the file says 'b')")
    # its spec may change
    assert fixed_change(old, dataclasses.replace(
        old, services=(dataclasses.replace(old.services[0], command=("x",)),
                       old.services[1]))) == ""
