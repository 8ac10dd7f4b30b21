"""The rcd backend with the real deploy/ rc scripts (rc.ai-agent, rc.ai-agent-manager),
pointed at a temp directory through their environment variables (AI_ROOT, AI_ETC, AI_LOG,
AI_PIDFILE), driven by a real ai-manager with backend = "rcd"."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from backendai.v1 import manager_pb2 as pb
from manager.supervision.rcd_unit import observe_rc_status
from manager.supervision.states import State
from tests.conftest import PY, ROOT, SERVICE, ManagerProc, assert_eventually

RC_AGENT = ROOT / "deploy" / "rc.ai-agent"
RC_MANAGER = ROOT / "deploy" / "rc.ai-agent-manager"


def make_host(base: Path, *service_args: str, version: str = "1.0.0") -> dict[str, str]:
    """An /opt/ai-agent-like tree with releases/V and current; returns the rc script env."""
    root = base / "opt" / "ai-agent"
    rel = root / "releases" / version
    (rel / "bin").mkdir(parents=True)
    (rel / "VERSION").write_text(version + "\n")
    script = rel / "bin" / "ai-agent"
    script.write_text(f"#!/bin/sh\nexport SERVICE_VERSION={version}\n"
                      f"exec {PY} -u {SERVICE} {' '.join(service_args)}\n")
    script.chmod(0o755)
    (root / "current").symlink_to(f"releases/{version}")
    return {"AI_ROOT": str(root), "AI_ETC": str(base / "etc"),
            "AI_LOG": str(base / "log" / "ai-agent.log"),
            "AI_PIDFILE": str(base / "run" / "ai-agent.pid"), "AI_STOP_TIMEOUT": "5"}


def rc(script: Path, verb: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), verb], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def rcd_service(env: dict[str, str], **over: Any) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "name": "ai-agent", "package": "@backend-ai/agent", "backend": "rcd",
        "rc_script": str(RC_AGENT), "log_file": env["AI_LOG"], "env": env,
        "install_root": env["AI_ROOT"], "status_interval": 0.1, "start_secs": 0.3,
        "backoff_initial": 0.1, "backoff_max": 0.3, "crash_loop_max": 3}
    svc.update(over)
    return svc


def pid_from(env: dict[str, str]) -> int:
    return int(Path(env["AI_PIDFILE"]).read_text().split()[0])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def host(tmp_path: Path) -> Any:
    env = make_host(tmp_path, "--interval", "0.2")
    yield env
    rc(RC_AGENT, "stop", env)


def test_status_mapping() -> None:
    run = observe_rc_status(0, "ai-agent is running (pid 42)\n")
    assert (run.state, run.pid) == (State.RUNNING, 42)
    assert observe_rc_status(3, "ai-agent is not running").state == State.STOPPED
    # many Unraid scripts always exit 0: the text decides
    assert observe_rc_status(0, "nginx is not running").state == State.STOPPED
    assert observe_rc_status(1, "dead but pid file exists").state == State.EXITED
    odd = observe_rc_status(4, "what?")
    assert odd.state == State.EXITED and "exit 4" in odd.message


def test_rc_script_itself(host: dict[str, str]) -> None:
    res = rc(RC_AGENT, "status", host)
    assert (res.returncode, res.stdout.strip()) == (3, "ai-agent is not running")
    res = rc(RC_AGENT, "start", host)
    assert res.returncode == 0 and "Starting ai-agent" in res.stdout
    pid = pid_from(host)
    res = rc(RC_AGENT, "status", host)
    assert (res.returncode, res.stdout.strip()) == (0, f"ai-agent is running (pid {pid})")
    assert "already running" in rc(RC_AGENT, "start", host).stdout
    assert pid_from(host) == pid
    assert os.getpgid(pid) == pid  # its own process group: stop reaches all of it
    assert_eventually(lambda: f"started pid={pid}" in Path(host["AI_LOG"]).read_text(),
                      what="the service's output in AI_LOG")
    os.kill(pid, signal.SIGKILL)
    assert_eventually(lambda: gone(pid), what="service gone")
    res = rc(RC_AGENT, "status", host)
    assert (res.returncode, res.stdout.strip()) == (1, "ai-agent is dead but pid file exists")
    assert rc(RC_AGENT, "restart", host).returncode == 0
    new = pid_from(host)
    assert new != pid and rc(RC_AGENT, "status", host).returncode == 0
    res = rc(RC_AGENT, "stop", host)
    assert res.returncode == 0 and gone(new)
    assert not Path(host["AI_PIDFILE"]).exists()
    assert rc(RC_AGENT, "status", host).returncode == 3
    assert rc(RC_AGENT, "bogus", host).returncode == 2


def test_manager_drives_rc_script(host: dict[str, str],
                                  make_manager: Callable[..., ManagerProc]) -> None:
    m = make_manager([rcd_service(host)]).start()
    st = m.status()
    assert (pb.ServiceState.Name(st.state), st.backend, st.version) == (
        "SERVICE_STATE_STOPPED", "rcd", "1.0.0")
    st = m.stub().Start(pb.StartRequest(), timeout=60)
    assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_RUNNING"
    assert st.pid == pid_from(host)
    code, body = m.http("GET", "/status")
    assert code == 200 and json.loads(body)["running"] is True
    # logs come from the file the script's service writes
    assert_eventually(lambda: f"started pid={st.pid}" in json.loads(
        m.http("GET", "/logs?lines=20")[1])["logs"], what="log line via /logs")
    stream = m.stub().StreamLogs(pb.StreamLogsRequest(tail_lines=1), timeout=60)
    ticks = 0
    for batch in stream:
        ticks += sum("tick" in line for line in batch.lines)
        if ticks >= 2:
            break
    stream.cancel()

    code, body = m.http("POST", "/restart")
    assert code == 200 and json.loads(body) == {"success": True}
    new = pid_from(host)
    assert new != st.pid and gone(st.pid) and m.status().pid == new
    st = m.stub().Stop(pb.StopRequest(), timeout=60)
    assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED" and gone(new)
    assert rc(RC_AGENT, "status", host).returncode == 3


def test_crash_is_restarted_and_seen_in_watch(host: dict[str, str],
                                              make_manager: Callable[..., ManagerProc]) -> None:
    m = make_manager([rcd_service(host)]).start()
    first = m.stub().Start(pb.StartRequest(), timeout=60)
    seen: queue.Queue[pb.ServiceStatus] = queue.Queue()
    stream = m.stub().WatchStatus(pb.WatchStatusRequest(), timeout=120)

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            for st in stream:
                seen.put(st)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert seen.get(timeout=30).pid == first.pid
        os.kill(first.pid, signal.SIGKILL)
        updates: list[pb.ServiceStatus] = []

        def restarted() -> bool:
            while not seen.empty():
                updates.append(seen.get())
            return any(u.restarts == 1 and u.pid not in (0, first.pid)
                       and pb.ServiceState.Name(u.state) == "SERVICE_STATE_RUNNING"
                       for u in updates)

        assert_eventually(restarted, 30, what="restart seen in WatchStatus")
        assert any(pb.ServiceState.Name(u.state) != "SERVICE_STATE_RUNNING" for u in updates)
        assert m.status().pid == pid_from(host)
    finally:
        stream.cancel()
        reader.join(10)
    # a stop through the manager is remembered: no restart after it
    m.stub().Stop(pb.StopRequest(), timeout=60)
    m.stub().Status(pb.StatusRequest(), timeout=10)
    assert pb.ServiceState.Name(m.status().state) == "SERVICE_STATE_STOPPED"
    assert not Path(host["AI_PIDFILE"]).exists()


def test_crash_loop_ends_fatal(tmp_path: Path, make_manager: Callable[..., ManagerProc]) -> None:
    env = make_host(tmp_path, "--exit-after", "0", "--code", "3")
    # start_secs well above the service's (Python) start-up even on a loaded machine:
    # every start fails because the process dies inside it, not because it was slow to
    m = make_manager([rcd_service(env, start_secs=5.0)]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert_eventually(lambda: pb.ServiceState.Name(m.status().state) == "SERVICE_STATE_FATAL",
                      30, what="FATAL after the crash loop")
    assert "crash loop" in m.status().message
    # nothing left running (and nothing for the cleanup to race with)
    assert_eventually(lambda: not m.service_processes(), 20, what="no service process left")


def test_missing_script_is_not_found(tmp_path: Path,
                                     make_manager: Callable[..., ManagerProc]) -> None:
    env = make_host(tmp_path)
    m = make_manager([rcd_service(env, rc_script=str(tmp_path / "rc.nope"))]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "rc.nope" in (err.value.details() or "")
    code, body = m.http("POST", "/restart")
    assert code == 404 and "rc.nope" in json.loads(body)["error"]


def test_hanging_script_times_out(tmp_path: Path,
                                  make_manager: Callable[..., ManagerProc]) -> None:
    env = make_host(tmp_path)
    marker = tmp_path / "hung.pid"
    script = tmp_path / "rc.hang"
    script.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 600\n")
    script.chmod(0o755)
    m = make_manager([rcd_service(env, rc_script=str(script), call_timeout=0.5,
                                  status_interval=5.0)]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not finish within 0.5s" in (err.value.details() or "")
    assert "did not finish" in m.status().message
    hung = int(marker.read_text())
    assert_eventually(lambda: gone(hung), what="the timed-out script is killed")


def test_manager_rc_script_runs_a_real_manager(tmp_path: Path) -> None:
    """rc.ai-agent-manager starts ai-manager from AI_ROOT/manager/venv and stops it."""
    env = make_host(tmp_path)
    venv_bin = Path(env["AI_ROOT"]) / "manager" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "ai-manager").symlink_to(Path(PY).parent / "ai-manager")
    etc = Path(env["AI_ETC"])
    etc.mkdir()
    (etc / "agent-manager.toml").write_text(
        f'http_listen = "127.0.0.1:0"\ngrpc_listen = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path / "state"}"\nlog_format = "json"\n'
        f'[[services]]\nname = "ai-agent"\nbackend = "rcd"\nrc_script = "{RC_AGENT}"\n'
        f'log_file = "{env["AI_LOG"]}"\n')
    menv = {**env, "AI_LOG": str(tmp_path / "log" / "ai-agent-manager.log"),
            "AI_PIDFILE": str(tmp_path / "run" / "ai-agent-manager.pid")}
    try:
        assert rc(RC_MANAGER, "reload", menv).returncode == 7  # not running yet
        assert rc(RC_MANAGER, "start", menv).returncode == 0
        pid = pid_from(menv)
        assert_eventually(lambda: "manager.ready" in Path(menv["AI_LOG"]).read_text(), 30,
                          what="manager ready in its log")
        assert rc(RC_MANAGER, "status", menv).returncode == 0
        # reload: SIGHUP to the manager, which re-reads its secrets and keeps running
        assert rc(RC_MANAGER, "reload", menv).returncode == 0
        assert_eventually(lambda: "daemon.reloaded" in Path(menv["AI_LOG"]).read_text(), 30,
                          what="the manager reloaded")
        assert pid_from(menv) == pid and not gone(pid)
    finally:
        assert rc(RC_MANAGER, "stop", menv).returncode == 0
    assert gone(pid)
    assert rc(RC_MANAGER, "status", menv).returncode == 3


def counting_rc_script(tmp_path: Path) -> tuple[Path, Callable[[], int]]:
    """The real rc script behind a wrapper that counts the manager's status polls."""
    calls = tmp_path / "status-calls"
    wrapper = tmp_path / "rc.counting"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = status ] && echo >> {calls}\nexec {RC_AGENT} "$@"\n')
    wrapper.chmod(0o755)

    def polls() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    return wrapper, polls


def counted_rcd_manager(tmp_path: Path, make_manager: Callable[..., ManagerProc],
                        ) -> tuple[dict[str, str], ManagerProc, Callable[[], int]]:
    """A host, and a started manager driving its rc script through the counting wrapper."""
    env = make_host(tmp_path, "--interval", "0.2")
    wrapper, polls = counting_rc_script(tmp_path)
    return env, make_manager([rcd_service(env, rc_script=str(wrapper))]).start(), polls


def test_stop_is_remembered_and_manager_kill9_recovers(
        tmp_path: Path, make_manager: Callable[..., ManagerProc]) -> None:
    env, m, polls = counted_rcd_manager(tmp_path, make_manager)
    try:
        pid = m.stub().Start(pb.StartRequest(), timeout=60).pid
        # kill -9 of the manager: the service is the script's, it keeps running, and the
        # restarted manager observes it (and supervises it again)
        m.kill9()
        assert pid_from(env) == pid and not gone(pid)
        m.start()
        assert_eventually(lambda: m.status().pid == pid, what="observed again")
        os.kill(pid, signal.SIGKILL)
        assert_eventually(lambda: m.status().restarts == 1 and m.status().pid not in (0, pid)
                          and m.status().state == pb.SERVICE_STATE_RUNNING, 30,
                          what="restarted after the manager restart")
        # a stop through the manager stays a stop, however many polls follow
        m.stub().Stop(pb.StopRequest(), timeout=60)
        after = polls()
        assert_eventually(lambda: polls() >= after + 5, 30, what="five more status polls")
        assert m.status().state == pb.SERVICE_STATE_STOPPED
        assert rc(RC_AGENT, "status", env).returncode == 3
    finally:
        rc(RC_AGENT, "stop", env)


def test_what_was_asked_survives_a_manager_kill9(
        tmp_path: Path, make_manager: Callable[..., ManagerProc]) -> None:
    """A service that dies while its manager is down is started by the next manager; one
    stopped through the manager stays stopped after the manager is killed and restarted."""
    env, m, polls = counted_rcd_manager(tmp_path, make_manager)
    try:
        pid = m.stub().Start(pb.StartRequest(), timeout=60).pid
        m.kill9()
        os.kill(pid, signal.SIGKILL)  # dies while nobody supervises it
        assert_eventually(lambda: gone(pid), what="service gone")
        assert rc(RC_AGENT, "status", env).returncode != 0
        m.start()
        assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING
                          and m.status().pid not in (0, pid), 30,
                          what="started again by the restarted manager")
        m.stub().Stop(pb.StopRequest(), timeout=60)
        m.kill9()
        m.start()
        # it stays stopped however many polls the new manager makes
        after = polls()
        assert_eventually(lambda: polls() >= after + 5, 30, what="five more status polls")
        assert m.status().state == pb.SERVICE_STATE_STOPPED
        assert rc(RC_AGENT, "status", env).returncode == 3
    finally:
        rc(RC_AGENT, "stop", env)


@pytest.mark.parametrize(("key", "value", "error"), [
    ("rc_script", "rc.ai-agent", "services[0].rc_script: must be an absolute path"),
    ("log_file", "logs/x.log", "services[0].log_file: must be an absolute path"),
    ("status_interval", 0, "services[0].status_interval: must be between"),
    ("call_timeout", -1, "services[0].call_timeout: must be between"),
    ("call_timeout", "30", "services[0].call_timeout: must be a number"),
    ("log_file", "/x\u0000y", "services[0].log_file: too long or contains NUL"),
])
def test_bad_rcd_keys_are_config_errors(tmp_path: Path, key: str, value: object,
                                        error: str) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n[[services]]\nname = "a"\nbackend = "rcd"\n'
                   f"{key} = {json.dumps(value)}\n")
    res = subprocess.run([PY, "-m", "manager.main", "--config", str(cfg), "--check-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert res.returncode != 0
    assert error in res.stdout + res.stderr


async def test_external_log_tail_and_follow_across_truncation_and_rotation(
        tmp_path: Path) -> None:
    """The log file another program writes: tail, then follow through truncation and a
    rotation (rename + new file), and a file that does not exist yet."""
    import asyncio

    from manager.supervision.external_log import ExternalLog

    path = tmp_path / "svc.log"
    log = ExternalLog(path, poll_interval=0.02)
    assert await log.tail(10) == []
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(5000)) + b"partial")
    assert await log.tail(3) == ["line 4997", "line 4998", "line 4999"]
    got: list[str] = []
    follower = log.follow(2)

    async def take(n: int) -> None:
        async with asyncio.timeout(20):
            while len(got) < n:
                got.extend(await anext(follower))

    await take(2)
    assert got == ["line 4998", "line 4999"]
    with path.open("ab") as fh:
        fh.write(b" done\nnext\n")
    await take(4)
    assert got[2:] == ["partial done", "next"]
    path.write_bytes(b"after truncate\n")  # truncated and rewritten in place
    await take(5)
    assert got[4] == "after truncate"
    with path.open("ab") as fh:
        fh.write(b"last of old\n")
    path.rename(tmp_path / "svc.log.1")
    path.write_bytes(b"first of new\n")
    await take(7)
    assert got[5:] == ["last of old", "first of new"]
    await follower.aclose()


def test_stop_timeout_reaches_the_script(tmp_path: Path,
                                         make_manager: Callable[..., ManagerProc]) -> None:
    """A service that ignores SIGTERM: the request's stop timeout (1 s) is passed to the
    script as AI_STOP_TIMEOUT, which then SIGKILLs the group — long before the configured
    stop_timeout of 600 s."""
    env = make_host(tmp_path, "--ignore-term", "--grandchild")
    m = make_manager([rcd_service(env, stop_timeout=600.0)]).start()
    try:
        st = m.stub().Start(pb.StartRequest(), timeout=60)
        assert_eventually(lambda: len(m.service_processes()) >= 2, 20,
                          what="service and its grandchild")
        st = m.stub().Stop(pb.StopRequest(timeout_seconds=1.0), timeout=60)
        assert pb.ServiceState.Name(st.state) == "SERVICE_STATE_STOPPED"
        assert_eventually(lambda: not m.service_processes(), 20,
                          what="the whole process group killed")
    finally:
        rc(RC_AGENT, "stop", env)


def test_ports_open_only_after_the_first_observation(
        tmp_path: Path, make_manager: Callable[..., ManagerProc]) -> None:
    """The manager answers only once its units know their services: with a first
    `status` call that takes 1.5 s, the ready file (written after the ports open) appears
    only after that call answered, and /status shows what it observed."""
    env = make_host(tmp_path, "--interval", "0.2")
    answered = tmp_path / "first-status-answered"
    slow = tmp_path / "rc.slow-first-status"
    slow.write_text(f'#!/bin/sh\nif [ "$1" = status ] && [ ! -e {answered} ]; then\n'
                    f'  sleep 1.5\n  {RC_AGENT} "$@"\n  rc=$?\n  touch {answered}\n'
                    f'  exit $rc\nfi\nexec {RC_AGENT} "$@"\n')
    slow.chmod(0o755)
    try:
        assert rc(RC_AGENT, "start", env).returncode == 0
        pid = pid_from(env)
        m = make_manager([rcd_service(env, rc_script=str(slow), status_interval=30.0)])
        m.start()
        assert answered.exists()
        code, body = m.http("GET", "/status")
        assert code == 200 and json.loads(body)["running"] is True
        st = m.status()
        assert (pb.ServiceState.Name(st.state), st.pid) == ("SERVICE_STATE_RUNNING", pid)
        assert st.message != "not observed yet"
    finally:
        rc(RC_AGENT, "stop", env)
