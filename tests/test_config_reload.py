"""A live config reload on a real ai-manager (gRPC Reload, POST /reload, SIGHUP): added
services start, removed ones stop and are forgotten, changed ones restart with their new
spec, unchanged ones keep their process. A broken file, a renamed primary service or a
changed listener change nothing and say which key; services keep running."""

from __future__ import annotations

import json
import signal
from typing import Any

import grpc
import psutil
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import ManagerProc, assert_eventually, fast_service, service_set_up, to_toml

RUNNING = pb.SERVICE_STATE_RUNNING
STOPPED = pb.SERVICE_STATE_STOPPED

pytestmark = pytest.mark.slow


def pid_of(m: ManagerProc, name: str) -> int:
    st = assert_eventually(lambda: (s := m.status(name)).state == RUNNING and s, 20,
                           what=f"{name} RUNNING")
    return int(st.pid)


def rewrite(m: ManagerProc, services: list[dict[str, Any]], **top: Any) -> None:
    """A new config file for the manager (the tag env added as ManagerProc does)."""
    out = []
    for given in services:
        svc = dict(given)
        svc.setdefault("working_directory", str(m.root))
        svc["env"] = {**svc.get("env", {}), "AI_TEST_TAG": m.tag}
        out.append(svc)
    m.config_path.write_text(to_toml({**m.top, **top}, out))


def reload(m: ManagerProc) -> pb.ReloadResponse:
    return m.stub().Reload(pb.ReloadRequest(), timeout=60)


def names(m: ManagerProc) -> list[str]:
    return [s.name for s in m.stub().ListServices(pb.ListServicesRequest(), timeout=10).services]


def test_reload_adds_removes_and_changes_services_and_leaves_the_rest_alone(make_manager):
    keep = fast_service("keep", "--interval", "0.5")
    change = fast_service("change", "--interval", "0.5")
    gone = fast_service("gone", "--interval", "0.5")
    m = make_manager([keep, change, gone]).start()
    pids = {n: pid_of(m, n) for n in ("keep", "change", "gone")}
    rewrite(m, [keep, fast_service("change", "--interval", "0.25"),
                fast_service("added", "--interval", "0.5")])
    resp = reload(m)
    assert (list(resp.added), list(resp.removed), list(resp.changed),
            list(resp.unchanged)) == (["added"], ["gone"], ["change"], ["keep"])
    assert resp.message == "reloaded: 1 added, 1 removed, 1 changed, 1 unchanged"
    assert m.status("keep").pid == pids["keep"] and m.status("keep").restarts == 0
    new_pid = pid_of(m, "change")
    assert new_pid != pids["change"]
    assert "--interval" in psutil.Process(new_pid).cmdline()
    assert psutil.Process(new_pid).cmdline()[-1] == "0.25"
    assert not psutil.pid_exists(pids["gone"]) or \
        psutil.Process(pids["gone"]).status() == psutil.STATUS_ZOMBIE
    assert pid_of(m, "added") > 0
    assert names(m) == ["keep", "change", "added"]
    with pytest.raises(grpc.RpcError) as err:
        m.status("gone")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # the same file again: nothing to do, nothing touched
    resp = reload(m)
    assert resp.message == "reloaded: no service changed"
    assert list(resp.unchanged) == ["keep", "change", "added"]
    assert m.status("change").pid == new_pid
    # a restarted manager keeps the new set (and forgot the removed service)
    assert m.stop() == 0
    m.write_config = lambda: None  # type: ignore[method-assign] # keep the reloaded file
    m.start()
    assert names(m) == ["keep", "change", "added"]
    assert m.status("keep").pid == pids["keep"] and m.status("keep").adopted


def test_a_changed_service_that_was_stopped_stays_stopped(make_manager):
    m = make_manager([fast_service("a"), fast_service("b")]).start()
    pid_of(m, "b")
    m.stub().Stop(pb.StopRequest(service="b"), timeout=20)
    rewrite(m, [fast_service("a"), fast_service("b", "--interval", "1")])
    assert list(reload(m).changed) == ["b"]
    assert m.status("b").state == STOPPED
    m.stub().Start(pb.StartRequest(service="b"), timeout=20)
    assert psutil.Process(pid_of(m, "b")).cmdline()[-1] == "1"


def test_reload_over_http_and_sighup(make_manager):
    m = make_manager([fast_service("a")]).start()
    a = pid_of(m, "a")
    rewrite(m, [fast_service("a"), fast_service("b")])
    code, body = m.http("POST", "/reload")
    assert code == 200, body
    data = json.loads(body)
    assert data == {"success": True, "message": "reloaded: 1 added, 0 removed, 0 changed, "
                    "1 unchanged", "added": ["b"], "removed": [], "changed": [],
                    "unchanged": ["a"]}
    pid_of(m, "b")
    rewrite(m, [fast_service("a"), fast_service("b"), fast_service("c")])
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    assert_eventually(lambda: "c" in names(m), 20, what="c added by SIGHUP")
    assert pid_of(m, "c") > 0
    assert m.status("a").pid == a
    code, body = m.http("POST", "/reload?x=1")
    assert code == 400 and b"'x'" in body


@pytest.mark.parametrize(("services", "top", "needle"), [
    (None, None, "invalid TOML"),
    ([fast_service("b"), fast_service("a")], {},
     "services[0].name: the primary service cannot change by reload (it is 'a', the file "
     "says 'b')"),
    ([fast_service("a"), fast_service("b", instances=0)], {},
     "services[1].instances: must be between 1 and 256, got 0"),
    ([fast_service("a"), fast_service("b", instances=10_000)], {},
     "services[1].instances: must be between 1 and 256, got 10000"),
    ([fast_service("a", after=["b"]), fast_service("b", after=["a"])], {},
     "services[0].after: a start-order cycle: a -> b -> a"),
    ([fast_service("a", health={"http": "gopher://x/"})], {},
     "services[0].health.http: must be an http:// or https:// URL"),
    ([fast_service("a", health={"exec": ["/no/such/check"]})], {},
     "services[0].health.exec: the program '/no/such/check' is not an executable file"),
    ([fast_service("a", instances=2, base_port=65535, command=["x", "{port}"])], {},
     "services[0].base_port: 65535 + 2 instances reaches port 65536"),
    ([fast_service("a")], {"grpc_listen": "127.0.0.1:1"}, "grpc_listen: cannot change by "
                                                         "reload"),
    ([fast_service("a")], {"http_listen": "127.0.0.1:1"}, "http_listen: cannot change by "
                                                         "reload"),
    ([fast_service("a")], {"state_dir": "/tmp/elsewhere"}, "state_dir: cannot change by "
                                                           "reload"),
])
def test_a_bad_reload_changes_nothing_and_names_the_key(make_manager, services, top, needle):
    m = make_manager([fast_service("a"), fast_service("b")]).start()
    pids = {n: pid_of(m, n) for n in ("a", "b")}
    if services is None:
        m.config_path.write_text("this is [not toml")
    else:
        rewrite(m, services, **top)
    with pytest.raises(grpc.RpcError) as err:
        reload(m)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    code, body = m.http("POST", "/reload")
    assert code == 400 and needle in json.loads(body)["error"]
    assert {n: m.status(n).pid for n in ("a", "b")} == pids
    assert names(m) == ["a", "b"]
    assert m.proc is not None and m.proc.poll() is None
    failed = [json.loads(line) for line in m.logs().splitlines() if line.startswith("{")
              and json.loads(line)["event"] == "daemon.reload_failed"]
    assert len(failed) == 2 and needle in failed[0]["error"]


def test_reload_with_instances_and_start_order(make_manager, tmp_path):
    rec = tmp_path / "rec"

    def svc(name: str, **over: Any) -> dict[str, Any]:
        label = f"{name}-{{instance}}" if "instances" in over else name
        return fast_service(name, "--record", str(rec), "--name", label, **over)

    m = make_manager([svc("a")]).start()
    a = pid_of(m, "a")
    # add a database and two workers that start after it
    rewrite(m, [svc("a"), svc("w", instances=2, after=["db"]), svc("db")])
    resp = reload(m)
    assert list(resp.added) == ["w-1", "w-2", "db"]
    for n in ("db", "w-1", "w-2"):
        pid_of(m, n)

    def starts() -> list[str]:
        return [line.split()[1] for line in rec.read_text().splitlines()
                if line.startswith("start")]
    got = assert_eventually(lambda: len(s := starts()) == 4 and s, 20, what="4 starts")
    assert got[0] == "a" and got[1] == "db" and sorted(got[2:]) == ["w-1", "w-2"]
    # one more instance: only it is added; then remove the database and its dependents
    rewrite(m, [svc("a"), svc("w", instances=3, after=["db"]), svc("db")])
    resp = reload(m)
    assert list(resp.added) == ["w-3"] and list(resp.changed) == []
    rec.write_text("")
    rewrite(m, [svc("a")])
    resp = reload(m)
    assert sorted(resp.removed) == ["db", "w-1", "w-2", "w-3"]
    stops = [line.split()[1] for line in rec.read_text().splitlines()
             if line.startswith("stop")]  # each writes it before it exits: all are here
    assert stops[-1] == "db" and sorted(stops[:-1]) == ["w-1", "w-2", "w-3"]
    assert names(m) == ["a"] and m.status("a").pid == a


def test_a_reload_during_an_update_is_refused_naming_it(env):
    from tests.update_support import started, update, watch_op

    env.build("1.0.0")
    env.build("1.1.0", blob_bytes=2 << 20)
    env.install("1.0.0")
    m = env.manager()
    pid = started(env, m)
    env.server.throttle = 0.05  # the download takes a few seconds
    op = update(m, "1.1.0")
    with pytest.raises(grpc.RpcError) as err:
        reload(m)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == (f"an update of service 'agent' is running (operation {op});"
                                   " reload once it has ended")
    code, body = m.http("POST", "/reload")
    assert code == 409 and op in json.loads(body)["error"]
    env.server.throttle = 0.0
    assert watch_op(m, op)[-1].outcome == "succeeded"
    assert reload(m).message == "reloaded: no service changed"
    assert m.status().pid != pid  # the update restarted it; the reload did not


def test_a_reload_that_adds_the_first_updatable_service_starts_the_updater(make_manager, env):
    from tests.update_support import update_service, watch_op

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = make_manager([fast_service("plain")]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Update(pb.UpdateRequest(version="1.1.0"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    rewrite(m, [fast_service("plain"), update_service(env.install_root, env.url, env.port)])
    assert list(reload(m).added) == ["agent"]
    pid_of(m, "agent")
    op = m.stub().Update(pb.UpdateRequest(service="agent", version="1.1.0"),
                         timeout=10).operation_id
    assert watch_op(m, op)[-1].outcome == "succeeded"
    assert m.status("agent").version == "1.1.0"


def test_a_service_removed_while_the_manager_was_down_is_stopped_at_its_start(make_manager):
    m = make_manager([fast_service("a"), fast_service("b", "--interval", "0.5")]).start()
    a, b = pid_of(m, "a"), pid_of(m, "b")
    m.kill9()
    rewrite(m, [fast_service("a")])
    m.write_config = lambda: None  # type: ignore[method-assign] # start with the new file
    m.start()
    assert_eventually(lambda: not psutil.pid_exists(b) or
                      psutil.Process(b).status() == psutil.STATUS_ZOMBIE, 20,
                      what="b stopped")
    assert names(m) == ["a"] and m.status("a").pid == a and m.status("a").adopted
    forgotten = [json.loads(line) for line in m.logs().splitlines() if line.startswith("{")
                 and json.loads(line)["event"] == "service.forgotten"]
    assert [e["service"] for e in forgotten] == ["b"]
    # its record is gone: added back later, it starts afresh
    rewrite(m, [fast_service("a"), fast_service("b")])
    assert list(reload(m).added) == ["b"]
    assert pid_of(m, "b") != b and m.status("b").restarts == 0


def test_kill9_during_a_reload_leaves_a_state_the_next_start_recovers(make_manager):
    """The manager dies while a reload waits for a changed service to stop (it ignores
    SIGTERM) and after it stopped a removed one: the next start, with the new file,
    forgets the removed one and keeps the changed one running (re-adopted)."""
    slow = fast_service("slow", "--ignore-term", stop_timeout=30.0)
    m = make_manager([fast_service("a"), slow, fast_service("gone")]).start()
    a, slow_pid, gone = pid_of(m, "a"), pid_of(m, "slow"), pid_of(m, "gone")
    service_set_up(m, slow_pid, "slow")  # ignoring SIGTERM by now
    rewrite(m, [fast_service("a"), fast_service("slow", "--ignore-term", "--interval", "1",
                                                stop_timeout=30.0)])
    future = m.stub().Reload.future(pb.ReloadRequest(), timeout=60)
    assert_eventually(lambda: m.status("slow").state == pb.SERVICE_STATE_STOPPING, 10,
                      what="the reload stopping slow")
    assert_eventually(lambda: not psutil.pid_exists(gone)
                      or psutil.Process(gone).status() == psutil.STATUS_ZOMBIE, 10)
    m.kill9()
    with pytest.raises(grpc.RpcError):
        future.result()
    m.write_config = lambda: None  # type: ignore[method-assign]
    m.start()
    assert names(m) == ["a", "slow"]
    assert m.status("a").pid == a
    st = assert_eventually(lambda: (s := m.status("slow")).state == RUNNING and s, 20)
    assert st.pid == slow_pid and st.adopted  # still the old process: reload to restart it
    resp = reload(m)
    assert list(resp.unchanged) == ["a", "slow"]  # the file is what it runs by now
