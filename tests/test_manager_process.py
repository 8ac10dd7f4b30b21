"""The built-in process backend end to end: a real ai-manager supervising real children.

Kill -9 of the service and of the manager, grandchildren, crash loops, re-adoption.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import ManagerProc, assert_eventually, fast_service, service_set_up

RUNNING = pb.SERVICE_STATE_RUNNING
FATAL = pb.SERVICE_STATE_FATAL
STOPPED = pb.SERVICE_STATE_STOPPED


def running_pid(m: ManagerProc, service: str = "") -> int:
    st = assert_eventually(lambda: (s := m.status(service)).state == RUNNING and s,
                           what="service RUNNING")
    return int(st.pid)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_service_runs_and_reports_status(make_manager):
    m = make_manager([fast_service("svc", "--interval", "0.05")]).start()
    pid = running_pid(m)
    st = m.status()
    assert st.name == "svc" and st.backend == "process" and st.restarts == 0
    assert alive(pid)
    assert os.getpgid(pid) == pid  # its own process group
    assert os.getsid(pid) == pid  # and its own session
    assert st.uptime_seconds >= 0


def test_kill9_of_service_restarts_it_with_a_new_pid(make_manager):
    m = make_manager([fast_service("svc", "--interval", "0.1")]).start()
    pid = running_pid(m)
    os.kill(pid, signal.SIGKILL)
    st = assert_eventually(lambda: (s := m.status()).pid not in (0, pid)
                           and s.state == RUNNING and s, what="restarted")
    assert st.restarts == 1
    assert st.exit_signal == signal.SIGKILL
    assert alive(st.pid)
    assert len(m.service_processes()) == 1


def test_kill9_of_manager_leaves_service_running_and_readopts_it(make_manager):
    m = make_manager([fast_service("svc", "--interval", "0.05")]).start()
    pid = running_pid(m)
    m.kill9()
    assert alive(pid), "the service must survive the manager's death"
    # While the manager is down the service keeps writing into the FIFO buffer.
    m.start()
    st = m.status()
    assert st.pid == pid and st.adopted and st.state == RUNNING
    procs = m.service_processes()
    assert [p.pid for p in procs] == [pid], "never a second copy"
    # Logs keep flowing after re-adoption.
    def new_ticks():
        lines = m.stub().Logs(pb.LogsRequest(lines=5), timeout=10).lines
        return lines and lines[-1].startswith("tick") and lines
    first = assert_eventually(new_ticks, what="ticks after re-adoption")
    assert_eventually(lambda: m.stub().Logs(pb.LogsRequest(lines=1), timeout=10).lines[-1]
                      != first[-1], what="more ticks")
    # And a crash of the adopted service is still detected (pidfd works for non-children).
    os.kill(pid, signal.SIGKILL)
    assert_eventually(lambda: (s := m.status()).pid not in (0, pid) and s.state == RUNNING,
                      what="adopted service restarted after kill -9")


def test_manager_restart_with_service_stopped_keeps_it_stopped(make_manager):
    m = make_manager([fast_service("svc", "--interval", "0.1")]).start()
    running_pid(m)
    m.stub().Stop(pb.StopRequest(), timeout=20)
    m.stop()
    m.start()
    assert m.status().state == STOPPED
    assert m.service_processes() == []


def test_reused_pid_is_not_adopted(make_manager, tmp_path):
    m = make_manager([fast_service("svc", "--interval", "0.1")]).start()
    pid = running_pid(m)
    m.kill9()
    os.kill(pid, signal.SIGKILL)
    # Another process now holds a pid the record points at: forge the record so.
    other = subprocess.Popen(["sleep", "60"])
    try:
        db = sqlite3.connect(m.state_dir / "manager.db")
        db.execute("UPDATE services SET pid = ?, create_time = create_time - 1000",
                   (other.pid,))
        db.commit()
        db.close()
        m.start()
        new = running_pid(m)
        assert new != other.pid and not m.status().adopted
        assert other.poll() is None, "the stranger was not touched"
    finally:
        other.kill()
        other.wait()


def test_stop_kills_grandchildren_that_ignore_sigterm(make_manager, tmp_path):
    pidfile = tmp_path / "svc.pid"
    m = make_manager([fast_service("svc", "--grandchild", "--pidfile", str(pidfile),
                                   stop_timeout=1.0)]).start()
    running_pid(m)
    child = int(assert_eventually(lambda: (pidfile.parent / "svc.pid.child").exists()
                                  and (pidfile.parent / "svc.pid.child").read_text()))
    assert alive(child)
    st = m.stub().Stop(pb.StopRequest(), timeout=30)
    assert st.state == STOPPED
    assert_eventually(lambda: not alive(child), 5, what="grandchild gone")
    assert m.service_processes() == []


def test_stop_kills_grandchildren_that_left_the_group(make_manager, tmp_path):
    pidfile = tmp_path / "svc.pid"
    m = make_manager([fast_service("svc", "--setsid-grandchild", "--pidfile", str(pidfile),
                                   stop_timeout=1.0)]).start()
    running_pid(m)
    child = int(assert_eventually(lambda: (pidfile.parent / "svc.pid.child").exists()
                                  and (pidfile.parent / "svc.pid.child").read_text()))
    assert os.getsid(child) == child  # really escaped the service's session
    m.stub().Stop(pb.StopRequest(), timeout=30)
    assert_eventually(lambda: not alive(child), 5, what="escaped grandchild gone")


def test_service_ignoring_sigterm_is_killed_after_the_stop_timeout(make_manager):
    m = make_manager([fast_service("svc", "--ignore-term", stop_timeout=0.5)]).start()
    pid = running_pid(m)
    service_set_up(m, pid)
    t0 = time.monotonic()
    st = m.stub().Stop(pb.StopRequest(), timeout=30)
    elapsed = time.monotonic() - t0
    assert st.state == STOPPED and st.exit_signal == signal.SIGKILL
    assert not alive(pid)
    assert elapsed >= 0.5  # it waited the timeout before killing
    # An explicit timeout and force in the request are honoured too.
    m.stub().Start(pb.StartRequest(), timeout=30)
    st = m.stub().Stop(pb.StopRequest(force=True), timeout=30)
    assert st.state == STOPPED and st.exit_signal == signal.SIGKILL


def test_crash_loop_ends_in_fatal_seen_in_status_and_watch(make_manager):
    m = make_manager([fast_service("svc", "--exit-after", "0", "--code", "3",
                                   crash_loop_max=3, backoff_initial=0.05,
                                   backoff_max=0.1)]).start()
    seen: list[int] = []
    stream = m.stub().WatchStatus(pb.WatchStatusRequest(), timeout=60)
    done = threading.Event()

    def reader():
        for st in stream:
            seen.append(st.state)
            if st.state == FATAL:
                done.set()
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert done.wait(30), f"no FATAL in WatchStatus: {seen}"
    stream.cancel()
    st = m.status()
    assert st.state == FATAL and "crash loop" in st.message and st.exit_code == 3
    assert pb.SERVICE_STATE_BACKOFF in seen or pb.SERVICE_STATE_STARTING in seen
    assert m.service_processes() == []


def test_stopping_a_service_in_backoff_clears_its_retry_message(make_manager):
    """Status that is current: once stopped, no "retrying in 2.08s" (issue 11 item 5),
    over gRPC and the seeds' /api/services; `desired` says what was last asked."""
    import json

    m = make_manager([fast_service("svc", "--exit-after", "0.2", "--code", "3",
                                   backoff_initial=30.0, backoff_max=30.0)]).start()
    st = assert_eventually(lambda: (s := m.status()).state == pb.SERVICE_STATE_BACKOFF and s,
                           what="BACKOFF")
    assert "retrying in" in st.message and st.desired == "running"
    m.stub().Stop(pb.StopRequest(), timeout=30)
    st = m.status()
    assert st.state == STOPPED and st.message == "stopped (was BACKOFF)"
    assert st.desired == "stopped" and st.exit_code == 3
    code, body = m.http("GET", "/api/services/svc/status")
    assert code == 200 and "retrying" not in json.loads(body)["service"]["message"]
    m.stub().Start(pb.StartRequest(no_wait=True), timeout=30)
    assert m.status().desired == "running"


def test_restart_policy_never_leaves_it_exited(make_manager):
    m = make_manager([fast_service("svc", "--exit-after", "0.5", "--code", "0",
                                   restart="never")]).start()
    st = assert_eventually(lambda: (s := m.status()).state == pb.SERVICE_STATE_EXITED and s)
    assert st.exit_code == 0 and st.restarts == 0


def test_start_reports_a_service_that_dies_at_once(make_manager):
    m = make_manager([fast_service("svc", "--exit-after", "0", autostart=False,
                                   start_secs=1.0)]).start()
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Start(pb.StartRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "failed to start" in err.value.details()


def test_spawn_error_is_reported(make_manager, tmp_path):
    m = make_manager([{"name": "svc", "command": [str(tmp_path / "missing-binary")],
                       "start_secs": 0.2, "backoff_initial": 0.05, "backoff_max": 0.1,
                       "crash_loop_max": 2}]).start()
    st = assert_eventually(lambda: (s := m.status()).state == FATAL and s)
    assert "spawn failed" in st.message and "missing-binary" in st.message


def test_env_working_directory_and_user(make_manager, tmp_path):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    workdir.chmod(0o755)
    tmp_path.chmod(0o755)
    script = ("import os; print('cwd', os.getcwd()); print('env', os.environ['GREETING']);"
              "print('uid', os.getuid(), flush=True); import time; time.sleep(3600)")
    svc = {"name": "svc", "command": ["python3", "-c", script], "start_secs": 0.2,
           "working_directory": str(workdir), "env": {"GREETING": "hello"}}
    as_root = os.geteuid() == 0
    if as_root:
        svc["user"] = "nobody"
    m = make_manager([svc]).start()
    running_pid(m)
    lines = assert_eventually(lambda: len(got := m.stub().Logs(pb.LogsRequest(), timeout=10)
                                          .lines) >= 3 and got)
    assert f"cwd {workdir}" in lines and "env hello" in lines
    if as_root:
        assert "uid 65534" in lines  # nobody


def test_concurrent_mixed_operations_end_consistent(make_manager):
    m = make_manager([fast_service("svc", "--interval", "0.2", start_secs=0.05)]).start()
    running_pid(m)
    stub = m.stub()
    ops = [lambda: stub.Start(pb.StartRequest(), timeout=60),
           lambda: stub.Stop(pb.StopRequest(), timeout=60),
           lambda: stub.Restart(pb.RestartRequest(), timeout=60)]
    errors: list[BaseException] = []
    max_seen = [0]
    stop_watch = threading.Event()

    def live_leader(proc: psutil.Process) -> bool:
        """A running group leader (the service itself, not one of its children); a
        process that exits while we look is not running."""
        try:
            return proc.pid == os.getpgid(proc.pid) and proc.status() != psutil.STATUS_ZOMBIE
        except (ProcessLookupError, psutil.Error):
            return False

    def watch_instances():
        while not stop_watch.is_set():
            leaders = [p for p in m.service_processes() if live_leader(p)]
            max_seen[0] = max(max_seen[0], len(leaders))

    def call(i):
        try:
            ops[i % 3]()
        except grpc.RpcError as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch_instances, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop_watch.set()
    watcher.join(10)
    assert not errors, errors
    assert max_seen[0] <= 1, "two instances were running at once"
    st = m.status()
    assert st.state in (RUNNING, STOPPED)
    procs = m.service_processes()
    assert len(procs) == (1 if st.state == RUNNING else 0)
    if st.state == RUNNING:
        assert procs[0].pid == st.pid


def test_status_reads_do_not_wait_for_lifecycle_operations(make_manager):
    # the stop lasts until the test ends it: the service ignores SIGTERM (set up before
    # the stop), and the stop timeout is far beyond the reads
    m = make_manager([fast_service("svc", "--ignore-term", stop_timeout=60.0)]).start()
    pid = running_pid(m)
    service_set_up(m, pid)
    stub = m.stub()
    fut = stub.Stop.future(pb.StopRequest(), timeout=90)
    st = assert_eventually(lambda: (s := m.status()).state == pb.SERVICE_STATE_STOPPING and s)
    t0 = time.monotonic()
    for _ in range(20):
        assert m.status().state == pb.SERVICE_STATE_STOPPING
    assert time.monotonic() - t0 < 2.5, "status waited behind the stop"
    assert not fut.done()
    os.kill(pid, signal.SIGKILL)  # ends the stop
    done = fut.result()
    assert done.state == STOPPED and done.exit_signal == signal.SIGKILL
    assert st.state == pb.SERVICE_STATE_STOPPING


def test_logs_rotate_and_tail_spans_files(make_manager):
    m = make_manager([fast_service("svc", "--burst", "20000", log_max_bytes=65536,
                                   log_backups=3)]).start()
    running_pid(m)
    logdir = m.state_dir / "logs"
    assert_eventually(lambda: m.stub().Logs(pb.LogsRequest(lines=1), timeout=10).lines
                      == ["burst line 19999"], what="burst written")
    files = sorted(p.name for p in logdir.iterdir())
    assert files == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.3"]
    assert all((logdir / f).stat().st_size <= 65536 for f in files)
    lines = m.stub().Logs(pb.LogsRequest(lines=3000), timeout=10).lines
    assert lines[-1] == "burst line 19999" and lines[0] == "burst line 17000"


def test_multiple_services_and_glob_listing(make_manager):
    m = make_manager([fast_service("web-1", "--interval", "1"),
                      fast_service("web-2", "--interval", "1"),
                      fast_service("worker", "--interval", "1")]).start()
    for name in ("web-1", "web-2", "worker"):
        running_pid(m, name)
    names = [s.name for s in m.stub().ListServices(pb.ListServicesRequest(pattern="web-*"),
                                                  timeout=10).services]
    assert names == ["web-1", "web-2"]
    assert m.status().name == "web-1"  # the first is primary
    m.stub().Stop(pb.StopRequest(service="worker"), timeout=30)
    assert m.status("worker").state == STOPPED and m.status("web-2").state == RUNNING


def test_manager_logs_are_json_lines(make_manager):
    import json
    m = make_manager([fast_service("svc")]).start()
    running_pid(m)
    m.stop()
    events = [json.loads(line) for line in m.logs().splitlines() if line.strip()]
    names = {e["event"] for e in events}
    assert {"manager.ready", "service.spawned", "manager.stopped"} <= names
    assert all("timestamp" in e and "level" in e for e in events)


def test_manager_refuses_a_second_instance_on_the_same_state_dir(make_manager):
    m = make_manager([fast_service("svc", "--interval", "1")]).start()
    running_pid(m)
    import sys
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config",
                          str(m.config_path)], capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 1 and "in use by pid" in out.stderr
    assert len(m.service_processes()) == 1



@pytest.mark.parametrize("which", ["grpc_listen", "http_listen"])
def test_manager_on_a_taken_port_exits_1_naming_it_and_leaves_no_service(
        make_manager, which):
    import socket
    import sys
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m = make_manager([fast_service("svc", "--interval", "1")],
                         top={which: f"127.0.0.1:{port}"})
        m.write_config()
        out = subprocess.run([sys.executable, "-m", "manager.main", "--config",
                              str(m.config_path)], capture_output=True, text=True, timeout=30,
                             cwd=Path(__file__).parent.parent)
    assert out.returncode == 1, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    assert m.service_processes() == []
