"""The systemd backend against a REAL systemd (a private `systemd --user`, see
tests/systemd_harness.py): the units come from deploy/ (installed by deploy/install.sh
--systemd-user, the user-mode variant of the same templates), a real ai-manager with
backend = "systemd" drives them through systemctl.

Logs: the harness runs a private journald, so the journal is read for real
(`journal_directory`); `log_file` and the host's own (empty) journal are covered too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from backendai.auth import write_token
from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc
from manager.supervision.states import State
from manager.supervision.systemd_unit import journal_message, observe_properties, parse_show
from tests.conftest import PY, ROOT, SERVICE, ManagerProc, assert_eventually
from tests.fixtures.real_fleet import publish_releases
from tests.systemd_harness import UserSystemd, scratch_root, user_systemd
from tests.update_support import (
    StoreServer,
    reserved_port,
    running_version,
    steps,
    watch_op,
)

pytestmark = [pytest.mark.systemd]
__all__ = ["scratch_root", "user_systemd"]  # fixtures used by the tests below

INSTALL = ROOT / "deploy" / "install.sh"
UNIT = "ai-agent.service"


def make_release(base: Path, version: str, *service_args: str) -> Path:
    """A release directory whose bin/ai-agent runs the test service."""
    rel = base / f"release-{version}"
    (rel / "bin").mkdir(parents=True)
    (rel / "VERSION").write_text(version + "\n")
    args = " ".join(service_args)
    script = rel / "bin" / "ai-agent"
    script.write_text(f"#!/bin/sh\nexport SERVICE_VERSION={version}\n"
                      f"exec {PY} -u {SERVICE} {args}\n")
    script.chmod(0o755)
    return rel


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), "--prefix", str(root), "--systemd-user", "--no-venv",
                           "--no-start", "--restart-sec", "100ms", *args, "agent"],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def installed(user_systemd: UserSystemd, scratch_root: Path) -> Iterator[Path]:
    """deploy/install.sh --systemd-user into a scratch root; uninstalled afterwards."""
    rel = make_release(scratch_root, "1.0.0", "--interval", "0.2")
    res = install(scratch_root, "--release", str(rel))
    assert res.returncode == 0, res.stderr
    assert (user_systemd.unit_dir / UNIT).exists()
    try:
        yield scratch_root
    finally:
        res = install(scratch_root, "--uninstall")
        assert res.returncode == 0, res.stderr
        assert not (user_systemd.unit_dir / UNIT).exists()


def systemd_service(root: Path, **over: Any) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "name": "ai-agent", "package": "@backend-ai/agent", "backend": "systemd",
        "systemd_scope": "user", "unit": UNIT, "install_root": str(root / "opt" / "ai-agent"),
        "status_interval": 0.1, "start_secs": 0.3, "stop_timeout": 10.0}
    svc.update(over)
    return svc


@pytest.fixture
def manager(installed: Path, make_manager: Callable[..., ManagerProc]) -> ManagerProc:
    return make_manager([systemd_service(installed)]).start()


def main_pid(sd: UserSystemd) -> int:
    return int(sd.show(UNIT, "MainPID")["MainPID"])


def state_of(m: ManagerProc) -> str:
    return pb.ServiceState.Name(m.status().state)


# ---- pure parts ----------------------------------------------------------------------

def test_property_mapping_covers_systemd_states() -> None:
    def obs(**props: str) -> Any:
        return observe_properties({"LoadState": "loaded", **props}, UNIT,
                                  now_wall=1000.0, now_mono=50.0)

    running = obs(ActiveState="active", SubState="running", MainPID="42", NRestarts="3",
                  ExecMainStartTimestampMonotonic="40000000")
    assert (running.state, running.pid, running.restarts) == (State.RUNNING, 42, 3)
    assert running.started_at == pytest.approx(990.0)
    assert obs(ActiveState="activating", SubState="auto-restart",
               Result="signal").state == State.BACKOFF
    assert obs(ActiveState="activating", SubState="start").state == State.STARTING
    assert obs(ActiveState="deactivating", SubState="stop-sigterm").state == State.STOPPING
    assert obs(ActiveState="inactive", SubState="dead", Result="success").state == State.STOPPED
    exited = obs(ActiveState="failed", SubState="failed", Result="exit-code", ExecMainCode="1",
                 ExecMainStatus="3")
    assert (exited.state, exited.exit_code) == (State.EXITED, 3)
    killed = obs(ActiveState="inactive", Result="signal", ExecMainCode="2", ExecMainStatus="9")
    assert (killed.state, killed.exit_signal) == (State.EXITED, 9)
    assert obs(ActiveState="failed", Result="start-limit-hit").state == State.FATAL
    # failed although systemd would restart it: it gave up (start limit)
    assert obs(ActiveState="failed", Result="exit-code", Restart="always").state == State.FATAL
    assert obs(ActiveState="failed", Result="exit-code", Restart="no").state == State.EXITED
    missing = observe_properties({"LoadState": "not-found", "ActiveState": "inactive"}, UNIT,
                                 now_wall=0, now_mono=0)
    assert not missing.exists and "not-found" in missing.message
    assert parse_show("A=1\nB=x=y\nbogus\n") == {"A": "1", "B": "x=y"}


def test_journal_json_lines_are_parsed() -> None:
    """journalctl -o json: MESSAGE is a string, or an array of bytes when not UTF-8 text."""
    assert journal_message(b'{"MESSAGE": "hello", "_PID": "7"}') == "hello"
    raw = json.dumps({"MESSAGE": list(b"caf\xc3\xa9 \xff\n")}).encode()
    assert journal_message(raw) == "caf\u00e9 \ufffd"
    assert journal_message(b'{"MESSAGE": null}') is None
    assert journal_message(b"not json") is None
    assert journal_message(b"[1, 2]") is None


# ---- against the real systemd ----------------------------------------------------------

def test_units_from_deploy_templates_verify(user_systemd: UserSystemd, installed: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit_file = user_systemd.unit_dir / UNIT
    text = unit_file.read_text()
    for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "StartLimitIntervalSec=0", "WantedBy=default.target"):
        assert line in text
    res = subprocess.run(["systemd-analyze", "verify", "--user", str(unit_file)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, **user_systemd.env})
    assert res.returncode == 0, res.stderr
    assert user_systemd.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"


def test_start_stop_restart_status(user_systemd: UserSystemd, manager: ManagerProc) -> None:
    assert state_of(manager) == "SERVICE_STATE_STOPPED"
    st = manager.status()
    assert (st.backend, st.version, st.package) == ("systemd", "1.0.0", "@backend-ai/agent")

    st = manager.stub().Start(pb.StartRequest(), timeout=60)
    assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_RUNNING"
    assert st.pid == main_pid(user_systemd) > 0
    assert user_systemd.show(UNIT, "ActiveState")["ActiveState"] == "active"
    # the seeds' JSON API sees the same
    code, body = manager.http("GET", "/status")
    assert code == 200 and json.loads(body)["running"] is True
    code, body = manager.http("GET", "/version")
    assert json.loads(body)["version"] == "1.0.0"
    assert json.loads(body)["name"] == "@backend-ai/agent"
    # starting a running service is a no-op
    assert manager.stub().Start(pb.StartRequest(), timeout=60).pid == st.pid

    old = st.pid
    code, body = manager.http("POST", "/restart")
    assert code == 200 and json.loads(body) == {"success": True}
    new = main_pid(user_systemd)
    assert new not in (0, old)
    assert manager.status().pid == new
    assert not Path(f"/proc/{old}").exists() or _is_zombie(old)

    st = manager.stub().Stop(pb.StopRequest(), timeout=60)
    assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED"
    assert st.pid == 0
    assert user_systemd.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
    # forced stop of a running service: the stop job, SIGKILL through systemctl kill;
    # stopped as asked, never FATAL (test_forced_stop_is_stopped_never_fatal)
    manager.stub().Start(pb.StartRequest(), timeout=60)
    st = manager.stub().Stop(pb.StopRequest(force=True), timeout=60)
    assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED", st.message
    assert user_systemd.show(UNIT, "ActiveState")["ActiveState"] == "inactive"


def test_forced_stop_is_stopped_never_fatal(user_systemd: UserSystemd, scratch_root: Path,
                                            make_manager: Callable[..., ManagerProc]) -> None:
    """A forced stop of a service that ignores SIGTERM (so only our SIGKILL ends it):
    systemd records a main process killed that way as a failure (ActiveState=failed,
    Result=signal), which for a Restart=always unit read as FATAL, "systemd gave up
    restarting it" (and, killed before the stop job ran, systemd could schedule a
    restart first). Repeated: STOPPED every time, the unit inactive, no restart counted,
    and a start after it runs."""
    rel = make_release(scratch_root, "1.0.0", "--interval", "0.2", "--ignore-term")
    res = install(scratch_root, "--release", str(rel))
    assert res.returncode == 0, res.stderr
    try:
        m = make_manager([systemd_service(scratch_root)]).start()
        for _ in range(5):
            first = m.stub().Start(pb.StartRequest(), timeout=60)
            assert pb.ServiceState.Name(first.state) == "SERVICE_STATE_RUNNING"
            restarts = int(user_systemd.show(UNIT, "NRestarts")["NRestarts"])
            st = m.stub().Stop(pb.StopRequest(force=True), timeout=60)
            assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED", st.message
            props = user_systemd.show(UNIT, "ActiveState", "Result", "NRestarts")
            assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
            assert int(props["NRestarts"]) <= restarts, props
            assert not psutil.pid_exists(first.pid) or _is_zombie(first.pid)
    finally:
        res = install(scratch_root, "--uninstall")
        assert res.returncode == 0, res.stderr


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def test_crash_and_systemd_restart_seen_in_watch_status(
        user_systemd: UserSystemd, manager: ManagerProc) -> None:
    first = manager.stub().Start(pb.StartRequest(), timeout=60)
    seen: queue.Queue[pb.ServiceStatus] = queue.Queue()
    stream = manager.stub().WatchStatus(pb.WatchStatusRequest(), timeout=120)

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            for st in stream:
                seen.put(st)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert seen.get(timeout=30).pid == first.pid  # the current status comes first
        os.kill(first.pid, signal.SIGKILL)
        updates: list[pb.ServiceStatus] = []

        def restarted() -> bool:
            while not seen.empty():
                updates.append(seen.get())
            return any(u.pid not in (0, first.pid) and u.restarts >= first.restarts + 1
                       and pb.ServiceState.Name(u.state) == "SERVICE_STATE_RUNNING"
                       for u in updates)

        assert_eventually(restarted, 30, what="systemd's restart seen in WatchStatus")
        # systemd, not the manager, restarted it: NRestarts counts it
        assert int(user_systemd.show(UNIT, "NRestarts")["NRestarts"]) >= 1
        assert manager.status().pid == main_pid(user_systemd)
    finally:
        stream.cancel()
        reader.join(10)


def test_manager_kill9_leaves_the_unit_running(user_systemd: UserSystemd,
                                               manager: ManagerProc) -> None:
    pid = manager.stub().Start(pb.StartRequest(), timeout=60).pid
    manager.kill9()
    assert main_pid(user_systemd) == pid  # the service is systemd's, not the manager's
    manager.start()
    st = manager.status()
    assert (pb.ServiceState.Name(st.state), st.pid) == ("SERVICE_STATE_RUNNING", pid)


def test_logs_from_log_file_and_empty_journal(user_systemd: UserSystemd, installed: Path,
                                               make_manager: Callable[..., ManagerProc]) -> None:
    log_file = installed / "ai-agent.log"
    dropin = user_systemd.unit_dir / f"{UNIT}.d"
    dropin.mkdir()
    (dropin / "log.conf").write_text(f"[Service]\nStandardOutput=append:{log_file}\n"
                                     "StandardError=inherit\n")
    user_systemd.systemctl("daemon-reload")
    try:
        m = make_manager([systemd_service(installed, log_file=str(log_file))]).start()
        pid = m.stub().Start(pb.StartRequest(), timeout=60).pid
        code, body = m.http("GET", "/logs?lines=50")
        assert code == 200
        assert_eventually(lambda: f"started pid={pid}" in json.loads(
            m.http("GET", "/logs?lines=50")[1])["logs"], 20, what="log line")
        # StreamLogs follows the file as systemd's service appends ticks
        stream = m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=1), timeout=60)
        got: list[str] = []
        for batch in stream:
            got += batch.lines
            if sum("tick" in line for line in got) >= 2:
                break
        stream.cancel()
        # without log_file the journal is read: journalctl runs and has nothing here
        j = make_manager([systemd_service(installed)], name="journal").start()
        code, body = j.http("GET", "/logs?lines=10")
        assert code == 200 and json.loads(body)["logs"] == ""
    finally:
        for f in dropin.iterdir():
            f.unlink()
        dropin.rmdir()
        user_systemd.systemctl("daemon-reload")


def test_missing_unit_is_not_found(installed: Path,
                                   make_manager: Callable[..., ManagerProc]) -> None:
    m = make_manager([systemd_service(installed, unit="no-such-unit.service")]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-unit.service" in (err.value.details() or "")
    code, body = m.http("POST", "/stop")
    assert code == 404 and json.loads(body)["success"] is False
    assert "not-found" in m.status().message


def test_bad_unit_names_are_config_errors(tmp_path: Path) -> None:
    for bad in ("--now.service", "ai-agent", "a b.service", "../x.service", "x" * 300 + ".service",
                "ai-agent.service; rm -rf /"):
        cfg = tmp_path / "m.toml"
        cfg.write_text(f'state_dir = "{tmp_path}"\n[[services]]\nname = "a"\n'
                       f'backend = "systemd"\nunit = {json.dumps(bad)}\n')
        res = subprocess.run([PY, "-m", "manager.main", "--config", str(cfg), "--check-config"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert res.returncode != 0, bad
        assert "services[0].unit" in res.stdout + res.stderr, bad
    cfg.write_text(f'state_dir = "{tmp_path}"\n[[services]]\nname = "a"\n'
                   'backend = "systemd"\nsystemd_scope = "session"\n')
    res = subprocess.run([PY, "-m", "manager.main", "--config", str(cfg), "--check-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert res.returncode != 0 and "services[0].systemd_scope" in res.stdout + res.stderr


def test_systemctl_missing_is_a_clear_error(installed: Path, tmp_path: Path,
                                            make_manager: Callable[..., ManagerProc],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # the manager inherits it: no systemctl to find
    m = make_manager([systemd_service(installed)]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "systemctl" in (err.value.details() or "")
    assert "systemctl" in m.status().message


# ---- updates through the systemd backend (manager/updater.py drives the unit) ------------

def test_update_and_rollback_through_systemd(user_systemd: UserSystemd, scratch_root: Path,
                                             make_manager: Callable[..., ManagerProc]) -> None:
    """Releases built by `aictl release build`, served over HTTP on 127.0.0.1; the unit's
    ExecStart runs from current/, so a switch plus a restart through systemctl updates it.
    A release that crashes at start (systemd keeps restarting it) is rolled back."""
    out = publish_releases(scratch_root, {"1.0.0": {}, "1.1.0": {},
                                          "1.2.0": {"behavior": {"crash": True}}})
    res = install(scratch_root, "--release", str(out / "1.0.0" / "agent-1.0.0.tar.gz"))
    assert res.returncode == 0, res.stderr
    server = StoreServer(scratch_root / "store")
    dropin = user_systemd.unit_dir / f"{UNIT}.d"
    try:
        with reserved_port() as port:
            dropin.mkdir()
            (dropin / "env.conf").write_text(
                f"[Service]\nEnvironment=HEALTH_PORT={port} AI_PYTHON={PY}\n")
            user_systemd.systemctl("daemon-reload")
            m = make_manager([systemd_service(
                scratch_root, package_url=server.package_url,
                health_probe="http", health_target=f"http://127.0.0.1:{port}/health",
                min_healthy_time=0.5, healthy_deadline=5.0, download_timeout=5.0)]).start()
            m.stub().Start(pb.StartRequest(), timeout=60)
            assert_eventually(lambda: _version_at(port) == "1.0.0", 20, what="1.0.0 serves")

            events = watch_op(m, m.stub().Update(pb.UpdateRequest(version="1.1.0"),
                                                 timeout=30).operation_id)
            assert events[-1].outcome == "succeeded", steps(events)
            assert _version_at(port) == "1.1.0" and m.status().version == "1.1.0"
            assert m.status().pid == main_pid(user_systemd)
            current = scratch_root / "opt" / "ai-agent" / "current"
            assert os.readlink(current) == "releases/1.1.0"

            events = watch_op(m, m.stub().Update(pb.UpdateRequest(version="1.2.0"),
                                                 timeout=30).operation_id, timeout=120)
            final = events[-1]
            assert final.outcome == "rolled_back", steps(events)
            assert "rolled back to version 1.1.0" in final.message
            assert os.readlink(current) == "releases/1.1.0"
            st = m.status()
            assert (pb.ServiceState.Name(st.state), st.version) == (
                "SERVICE_STATE_RUNNING", "1.1.0")
            assert st.update.last_outcome == "rolled_back"
            assert_eventually(lambda: _version_at(port) == "1.1.0", 20, what="1.1.0 serves")
            assert user_systemd.show(UNIT, "ActiveState")["ActiveState"] == "active"
    finally:
        server.close()
        for f in dropin.glob("*"):
            f.unlink()
        with contextlib.suppress(OSError):
            dropin.rmdir()
        user_systemd.systemctl("stop", UNIT, check=False)
        install(scratch_root, "--uninstall")
        user_systemd.systemctl("daemon-reload")


def _version_at(port: int) -> str:
    try:
        return running_version(port)
    except OSError:
        return ""


def test_journal_follow_runs_journalctl_and_ends_it(
        installed: Path, make_manager: Callable[..., ManagerProc]) -> None:
    """StreamLogs from the journal keeps one `journalctl --follow` per stream (nothing to
    read here: no journald) and kills it when the stream is cancelled."""
    m = make_manager([systemd_service(installed)]).start()
    assert m.proc is not None
    manager = psutil.Process(m.proc.pid)

    def followers() -> list[psutil.Process]:
        out = []
        for child in manager.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "--follow" in child.cmdline() and child.name() == "journalctl":
                    out.append(child)
        return out

    stream = m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=5), timeout=60)
    done = threading.Event()

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            for _ in stream:
                pass
        done.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    procs = assert_eventually(followers, 20, what="journalctl --follow running")
    assert "--user-unit=ai-agent.service" in procs[0].cmdline()
    stream.cancel()
    assert done.wait(20)
    assert_eventually(lambda: not followers(), 20, what="journalctl ended with the stream")
    # no_follow: just the (empty) history
    assert list(m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=5, no_follow=True),
                                    timeout=30)) == []
    # kill -9 of the manager mid-stream: its journalctl dies with it (pdeathsig)
    stream = m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=5), timeout=60)
    done.clear()
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    orphan = assert_eventually(followers, 20, what="journalctl --follow running")[0]
    m.kill9()
    assert done.wait(20)

    def orphan_gone() -> bool:
        try:
            return orphan.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert_eventually(orphan_gone, 20, what="journalctl ended with the manager")


def test_deployed_manager_unit_drives_the_agent_unit(user_systemd: UserSystemd,
                                                     installed: Path) -> None:
    """Both units as install.sh wrote them, run by systemd: ai-agent-manager.service
    (hardened: NoNewPrivileges, ProtectSystem=strict, PrivateTmp, ReadWritePaths) runs
    the real manager with the config install.sh wrote, which drives ai-agent.service
    through systemctl --user. Test-only changes: the venv is this checkout's .venv,
    the listen addresses are 127.0.0.1:0, and a drop-in adds --ready-file."""
    opt = installed / "opt" / "ai-agent"
    (opt / "manager" / "venv").symlink_to(Path(PY).parent.parent)
    etc = installed / "etc" / "backend-ai"
    cfg = etc / "agent-manager.toml"
    text = cfg.read_text().replace('"0.0.0.0:3081"', '"127.0.0.1:0"').replace(
        '"0.0.0.0:3082"', '"127.0.0.1:0"')
    cfg.write_text(text + "status_interval = 0.2\nstart_secs = 0.3\n")
    state = installed / "var" / "lib" / "backend-ai" / "agent-manager"
    ready = state / "ready.json"
    manager_unit = "ai-agent-manager.service"
    dropin = user_systemd.unit_dir / f"{manager_unit}.d"
    dropin.mkdir()
    (dropin / "ready.conf").write_text(
        f"[Service]\nExecStart=\nExecStart={opt}/manager/venv/bin/ai-manager "
        f"--config {cfg} --ready-file {ready}\n")
    user_systemd.systemctl("daemon-reload")
    token = (etc / "manager.token").read_text().strip()
    auth = [("authorization", f"Bearer {token}")]
    try:
        user_systemd.systemctl("start", manager_unit)
        assert_eventually(ready.exists, 30, what="manager ready")
        info = json.loads(ready.read_text())
        with grpc.insecure_channel(f"127.0.0.1:{info['grpc_port']}") as channel:
            stub = pb_grpc.ManagerStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Status(pb.StatusRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            st = stub.Status(pb.StatusRequest(), timeout=10, metadata=auth)
            assert (st.name, st.backend, st.version) == ("ai-agent", "systemd", "1.0.0")
            st = stub.Start(pb.StartRequest(), timeout=60, metadata=auth)
            assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_RUNNING"
            agent_pid = main_pid(user_systemd)
            assert st.pid == agent_pid
        # the local socket install.sh configured, in the unit's RuntimeDirectory
        sock = user_systemd.runtime / "ai-agent-manager" / "grpc.sock"
        assert info["grpc_socket"] == str(sock)
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            st = pb_grpc.ManagerStub(channel).Status(pb.StatusRequest(), timeout=10,
                                                     metadata=auth)
            assert st.pid == agent_pid
        # restarting the manager unit leaves the agent unit alone
        manager_pid = int(user_systemd.show(manager_unit, "MainPID")["MainPID"])
        ready.unlink()
        user_systemd.systemctl("restart", manager_unit)
        assert_eventually(ready.exists, 30, what="manager ready again")
        assert int(user_systemd.show(manager_unit, "MainPID")["MainPID"]) != manager_pid
        assert main_pid(user_systemd) == agent_pid
        info = json.loads(ready.read_text())
        # systemctl reload (ExecReload: SIGHUP) puts a rotated token in force, no restart
        manager_pid = int(user_systemd.show(manager_unit, "MainPID")["MainPID"])
        write_token(etc / "manager.token", "rotated-token")
        user_systemd.systemctl("reload", manager_unit)
        auth = [("authorization", "Bearer rotated-token")]
        with grpc.insecure_channel(f"127.0.0.1:{info['grpc_port']}") as channel:
            stub = pb_grpc.ManagerStub(channel)
            assert_eventually(lambda: _authorized(stub, auth), 20, what="rotated token")
            assert int(user_systemd.show(manager_unit, "MainPID")["MainPID"]) == manager_pid
            st = stub.Stop(pb.StopRequest(), timeout=60, metadata=auth)
            assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED"
        assert user_systemd.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
        user_systemd.systemctl("stop", manager_unit)
        assert not sock.parent.exists()  # systemd removed the RuntimeDirectory
    finally:
        user_systemd.systemctl("stop", manager_unit, check=False)
        for f in dropin.glob("*"):
            f.unlink()
        dropin.rmdir()
        (opt / "manager" / "venv").unlink()


def _authorized(stub: pb_grpc.ManagerStub, auth: list[tuple[str, str]]) -> bool:
    try:
        stub.Status(pb.StatusRequest(), timeout=10, metadata=auth)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return False
    return True


def _unit_state(sd: UserSystemd, unit: str) -> dict[str, str]:
    return sd.show(unit, "ActiveState", "SubState", "Result", "ExecMainStatus")


def test_start_limit_is_fatal_and_a_manual_start_clears_it(
        user_systemd: UserSystemd, scratch_root: Path,
        make_manager: Callable[..., ManagerProc]) -> None:
    """A unit (written here, not from deploy/: those never give up) that crashes until
    systemd's start limit trips: FATAL; once fixed, a start through the manager resets the
    failed state and runs it."""
    unit = "crashy.service"
    path = user_systemd.unit_dir / unit
    path.write_text("[Unit]\nStartLimitIntervalSec=600\nStartLimitBurst=3\n"
                    "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=50ms\n")
    user_systemd.systemctl("daemon-reload")
    try:
        m = make_manager([systemd_service(scratch_root, unit=unit)]).start()
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Start(pb.StartRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert_eventually(lambda: state_of(m) == "SERVICE_STATE_FATAL", 30, what="FATAL")
        assert "systemd gave up restarting it" in m.status().message
        crashed = m.status().restarts
        assert crashed == int(user_systemd.show(unit, "NRestarts")["NRestarts"]) >= 2
        path.write_text(path.read_text().replace("/bin/false", "/bin/sleep 600"))
        user_systemd.systemctl("daemon-reload")
        st = m.stub().Start(pb.StartRequest(), timeout=60)
        assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_RUNNING"
        assert st.pid == int(user_systemd.show(unit, "MainPID")["MainPID"]) > 0
        # the start's reset-failed zeroed systemd's count; the manager's does not go back
        assert int(user_systemd.show(unit, "NRestarts")["NRestarts"]) == 0
        assert st.restarts == m.status().restarts == crashed
    finally:
        user_systemd.systemctl("stop", unit, check=False)
        path.unlink()
        user_systemd.systemctl("reset-failed", check=False)
        user_systemd.systemctl("daemon-reload")


def test_unresponsive_systemd_times_out_and_recovers(
        user_systemd: UserSystemd, installed: Path,
        make_manager: Callable[..., ManagerProc]) -> None:
    """Fault injection on the real systemd: SIGSTOP it, so every systemctl call hangs.
    Each call is cut at call_timeout, requests fail with DEADLINE_EXCEEDED, the status
    says why, and everything recovers once systemd runs again."""
    m = make_manager([systemd_service(installed, call_timeout=1.0)]).start()
    assert m.stub().Start(pb.StartRequest(), timeout=60).pid == main_pid(user_systemd)
    assert user_systemd.proc is not None
    systemd = next(p for p in psutil.Process(user_systemd.proc.pid).children(recursive=True)
                   if p.name() == "systemd")
    systemd.suspend()
    try:
        assert_eventually(lambda: "did not finish within 1s" in m.status().message, 30,
                          what="status says systemctl hangs")
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Restart(pb.RestartRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        code, body = m.http("POST", "/stop")
        assert code == 504 and "did not finish" in json.loads(body)["error"]
    finally:
        systemd.resume()

    def agrees() -> bool:
        # The timed-out requests may or may not reach systemd once it runs again (their
        # bytes sit in its socket); either way the manager must report what systemd says.
        active = user_systemd.show(UNIT, "ActiveState")["ActiveState"]
        st = m.status()
        want = {"active": pb.SERVICE_STATE_RUNNING, "inactive": pb.SERVICE_STATE_STOPPED}
        return ("did not finish" not in st.message and st.pid == main_pid(user_systemd)
                and want.get(active) == st.state)

    assert_eventually(agrees, 30, what="status recovered and agrees with systemd")


def test_concurrent_requests_are_serialized(user_systemd: UserSystemd,
                                            manager: ManagerProc) -> None:
    """Eight restarts and stops at once: each waits its turn (one lock per service), every
    one succeeds, and the end state is what systemd says."""
    manager.stub().Start(pb.StartRequest(), timeout=60)
    results: queue.Queue[tuple[str, object]] = queue.Queue()

    def call(kind: str) -> None:
        try:
            if kind == "restart":
                st = manager.stub().Restart(pb.RestartRequest(), timeout=120)
            else:
                st = manager.stub().Stop(pb.StopRequest(), timeout=120)
            results.put((kind, pb.ServiceState.Name(st.state)))
        except grpc.RpcError as exc:
            results.put((kind, exc.code()))

    threads = [threading.Thread(target=call, args=("restart" if i % 4 else "stop",))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    got = [results.get_nowait() for _ in range(8)]
    assert all(v == ("SERVICE_STATE_RUNNING" if k == "restart" else "SERVICE_STATE_STOPPED")
               for k, v in got), got
    active = user_systemd.show(UNIT, "ActiveState")["ActiveState"]
    st = manager.status()
    assert (active, st.pid) in (("active", main_pid(user_systemd)), ("inactive", 0))


def test_logs_from_a_real_journal(user_systemd: UserSystemd, installed: Path,
                                  make_manager: Callable[..., ManagerProc]) -> None:
    """The harness's private journald records the unit's output; the manager reads it with
    `journalctl --directory=... --user-unit=ai-agent.service -o json` (last N, then follow)."""
    m = make_manager([systemd_service(
        installed, journal_directory=str(user_systemd.journal_dir))]).start()
    pid = m.stub().Start(pb.StartRequest(), timeout=60).pid

    def logs(lines: int) -> list[str]:
        code, body = m.http("GET", f"/logs?lines={lines}")
        assert code == 200
        return list(json.loads(body)["logs"].splitlines())

    assert_eventually(lambda: f"started pid={pid} version=1.0.0" in logs(100), 30,
                      what="the service's first line in the journal")
    assert_eventually(lambda: len(logs(3)) == 3, 30, what="exactly the last three lines")
    got: list[str] = []
    stream = m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=2), timeout=60)
    for batch in stream:
        got += batch.lines
        if len(got) >= 5:
            break
    stream.cancel()
    ticks = [int(line.split()[1]) for line in got if line.startswith("tick ")]
    assert ticks == sorted(ticks) and len(ticks) >= 4  # history, then new lines in order


def test_broken_unit_file_is_a_clear_error(user_systemd: UserSystemd, scratch_root: Path,
                                           make_manager: Callable[..., ManagerProc]) -> None:
    """A unit whose file systemd rejects (relative ExecStart): status says so, and a start
    fails with systemd's own reason."""
    unit = "broken.service"
    path = user_systemd.unit_dir / unit
    path.write_text("[Service]\nExecStart=relative/path\n")
    user_systemd.systemctl("daemon-reload")
    try:
        m = make_manager([systemd_service(scratch_root, unit=unit)]).start()
        assert_eventually(lambda: "bad-setting" in m.status().message, 20,
                          what="status names the bad unit file")
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Start(pb.StartRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert "systemctl start broken.service failed" in (err.value.details() or "")
        assert state_of(m) == "SERVICE_STATE_STOPPED"
    finally:
        path.unlink()
        user_systemd.systemctl("daemon-reload")
