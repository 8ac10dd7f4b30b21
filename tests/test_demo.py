"""The README's main job, end to end: `aictl demo --once` builds releases, starts a real
hub, real managers and real agents on loopback, rolls the fleet (hub first) to the new
version in waves, then sees the broken release halted at the canary and rolled back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from tests.conftest import assert_eventually


def test_demo_once_rolls_out_and_stops_the_broken_release(tmp_path):
    work = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "aictl.main", "demo", "--agents", "3",
                          "--once", "--dir", str(work)],
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded — 4/4 succeeded" in out.stdout  # the hub and 3 agents
    assert "version 1.2.0, rolled_back" in out.stdout
    assert "every agent runs 1.1.0" in out.stdout
    endpoints = json.loads((work / "endpoints.json").read_text())
    assert {h["role"] for h in endpoints["hosts"]} == {"hub", "agent"}
    assert len(endpoints["hosts"]) == 4
    # Every version stays on disk for rollback, and current points at 1.1.0 everywhere.
    for host in endpoints["hosts"]:
        service = "ai-hub" if host["role"] == "hub" else "ai-agent"
        current = (work / host["name"] / "opt" / service / "current").resolve()
        assert current.name == "1.1.0"
    # Nothing the demo started is left running.
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(work) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


# ---- whatever stops it, nothing it started is left (issue 11, item 9) ------------------

def _ours(work) -> list[psutil.Process]:
    """Processes of this demo run: their command line or working directory is in it."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        if p.pid == os.getpid():
            continue
        if str(work) in " ".join(p.info["cmdline"] or []) or \
                str(p.info["cwd"] or "").startswith(str(work)):
            found.append(p)
    return found


class Demo:
    """`aictl demo --once` as a process whose output is read as it comes."""

    def __init__(self, work) -> None:
        self.work = work
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aictl.main", "demo", "--agents", "2", "--once",
             "--dir", str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, predicate, what: str, timeout: float = 120.0) -> None:
        assert_eventually(lambda: predicate() or self.proc.poll() is not None, timeout,
                          what=what)
        assert self.proc.poll() is None, f"demo ended before {what}:\n{self.text()}"

    def seen(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)

    def text(self) -> str:
        return "".join(self.lines)[-6000:]

    def end(self, timeout: float = 90.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.reader.join(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return code


def _started_managers(work) -> bool:
    return any(p.name == "manager.log" for p in work.glob("*/manager.log"))


@pytest.mark.slow
@pytest.mark.parametrize("when", ["build", "start-up", "watch", "second-ctrl-c"])
def test_a_signal_at_any_moment_leaves_nothing_running(tmp_path, when):
    work = tmp_path / "demo"
    demo = Demo(work)
    try:
        if when == "build":
            demo.wait_for(lambda: demo.seen("==> building"), "the build")
            demo.proc.send_signal(signal.SIGTERM)
            expected = 128 + signal.SIGTERM
        elif when == "start-up":
            demo.wait_for(lambda: _started_managers(work), "a manager started")
            demo.proc.send_signal(signal.SIGTERM)
            expected = 128 + signal.SIGTERM
        elif when == "watch":
            demo.wait_for(lambda: demo.seen("host.step"), "a rollout being watched")
            demo.proc.send_signal(signal.SIGINT)
            expected = 128 + signal.SIGINT
        else:  # Ctrl-C during start-up, and again while it stops: it hurries, still ends all
            demo.wait_for(lambda: demo.seen("==> starting"), "the start-up")
            demo.wait_for(lambda: len(_ours(work)) >= 2, "managers running")
            demo.proc.send_signal(signal.SIGINT)
            demo.wait_for(lambda: demo.seen("stopping the fleet"), "the teardown", 30)
            demo.proc.send_signal(signal.SIGINT)
            expected = 128 + signal.SIGINT
    finally:
        code = demo.end()
    assert code == expected, demo.text()
    assert "interrupted by SIG" in demo.text() and "Traceback" not in demo.text()
    assert_eventually(lambda: _ours(work) == [], 15, what="nothing of the demo left")


@pytest.mark.slow
def test_a_manager_restarted_with_its_command_line_is_found_again(tmp_path):
    """The demo pins each manager's ports after its first start: one killed and started
    again with the command line endpoints.json gives is reachable where the hub looks."""
    work = tmp_path / "demo"
    demo = Demo(work)
    restarted = None
    try:
        demo.wait_for(lambda: demo.seen("every endpoint is in"), "the fleet up", 180)
        endpoints = json.loads((work / "endpoints.json").read_text())
        agent = next(h for h in endpoints["hosts"] if h["role"] == "agent")
        how = endpoints["managers"][agent["name"]]
        victim = next(p for p in _ours(work) if p.cmdline()[-4:] == how["argv"][-4:])
        victim.kill()

        def gone() -> bool:
            try:
                return victim.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True
        assert_eventually(gone, 10, what="the killed manager gone")
        log = (tmp_path / "restarted.log").open("wb")
        restarted = subprocess.Popen(how["argv"], stdout=log, stderr=log,
                                     start_new_session=True, cwd=how["cwd"])
        log.close()

        def reachable() -> bool:
            out = subprocess.run([sys.executable, "-m", "aictl.main", "agents", "--hub",
                                  endpoints["hub"], "--json"], capture_output=True, text=True,
                                 timeout=30)
            hosts = json.loads(out.stdout) if out.returncode == 0 else []
            return any(h["name"] == agent["name"] and h["reachable"] for h in hosts)
        assert_eventually(reachable, 60, what="the hub finds the restarted manager: "
                          + (tmp_path / "restarted.log").read_text()[-3000:])
    finally:
        demo.proc.send_signal(signal.SIGTERM)
        demo.end()
    # the teardown ended the restarted manager too (its command line is the demo's)
    assert restarted.wait(15) is not None
    assert_eventually(lambda: _ours(work) == [], 15, what="nothing of the demo left")
