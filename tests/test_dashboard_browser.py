"""The manager's services page in a real browser: Debian's headless Chromium driven by
Selenium (tests/fixtures/components.py `chromium()`), against a real `ai-manager` with
real services. Stopping a service from the page shows STOPPED within a second, starting
shows RUNNING, a kill -9 shows the restart live, the log tail shows new lines, the
token is asked once, a read-only token cannot act, and the page keeps to its
Content-Security-Policy (no violations in the console). Screenshots go to
tests/artifacts/ (git-ignored); docs/img/manager-ui.png is one of them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from backendai.auth import write_token
from tests.conftest import ROOT, ManagerProc, fast_service
from tests.fixtures.components import chromium, wait_until

ARTIFACTS = ROOT / "tests" / "artifacts"
pytestmark = pytest.mark.slow


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def cell(driver: Any, service: str, column: str) -> Any:
    return css(driver, f'tr[data-service="{service}"] td.{column}')


def state_of(driver: Any, service: str) -> str:
    return cell(driver, service, "state").get_attribute("data-state") or ""


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def confirm(driver: Any, **fields: Any) -> None:
    """Fill the confirmation dialog's fields and press its OK button."""
    wait_until(lambda: css(driver, "dialog#confirm").get_attribute("open") is not None, 5,
               "the confirmation dialog")
    for name, value in fields.items():
        box = css(driver, f"#confirm-{name}")
        if isinstance(value, bool):
            if box.is_selected() != value:
                box.click()
        else:
            box.clear()
            box.send_keys(str(value))
    css(driver, "#confirm-ok").click()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def act(driver: Any, service: str, action: str) -> None:
    css(driver, f'tr[data-service="{service}"] button[data-action="{action}"]').click()


@pytest.fixture
def manager(make_manager) -> ManagerProc:
    return make_manager([
        fast_service("web", "--interval", "0.2"),
        fast_service("worker", "--interval", "1"),
        {"name": "flaky", "command": ["/bin/false"], "backoff_initial": 0.2,
         "backoff_max": 0.5, "crash_loop_max": 3},
    ]).start()


def test_the_page_shows_and_drives_services_live(manager) -> None:
    m = manager
    with chromium() as d:
        d.get(f"http://127.0.0.1:{m.http_port}/ui/")
        wait_until(lambda: state_of(d, "web") == "RUNNING" and state_of(d, "worker") == "RUNNING",
                   10, "both services RUNNING in the table")
        assert css(d, "#conn").get_attribute("data-state") == "live"
        assert [r.get_attribute("data-service") for r in
                d.find_elements("css selector", "#services-body tr")] == ["web", "worker", "flaky"]
        wait_until(lambda: state_of(d, "flaky") == "FATAL", 20, "the crash loop shown FATAL")
        assert "crash loop" in cell(d, "flaky", "message").text
        # the log tail of the selected service shows new lines
        css(d, 'tr[data-service="web"] td.name').click()

        def last_tick() -> int:
            ticks = [line for line in css(d, "#log").text.splitlines()
                     if line.startswith("tick ")]
            return int(ticks[-1].split()[1]) if ticks else -1

        first = wait_until(lambda: last_tick() + 1, 10, "log lines") - 1
        wait_until(lambda: last_tick() >= first + 3, 10, "new log lines")
        time.sleep(1.1)  # let the uptime tick once for the screenshot (not a sync point)
        shot(d, "manager-ui")

        # stop from the page, with seed 004's timeout: STOPPED within a second
        act(d, "worker", "stop")
        confirm(d, timeout=5, force=False)
        clicked = time.monotonic()
        wait_until(lambda: state_of(d, "worker") == "STOPPED", 5, "worker STOPPED")
        assert time.monotonic() - clicked < 1.0
        assert cell(d, "worker", "pid").text == ""
        assert not m.status("worker").pid
        assert "stopped" in css(d, "#notice").text.lower()
        shot(d, "manager-ui-stopped")

        # start from the page: RUNNING
        act(d, "worker", "start")
        confirm(d)
        wait_until(lambda: state_of(d, "worker") == "RUNNING", 10, "worker RUNNING")
        pid = int(cell(d, "worker", "pid").text)
        assert pid == m.status("worker").pid

        # kill -9 of the service: the restart shows live
        restarts = int(cell(d, "worker", "restarts").text)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: int(cell(d, "worker", "restarts").text) == restarts + 1
                   and state_of(d, "worker") == "RUNNING"
                   and cell(d, "worker", "pid").text not in ("", str(pid)), 10,
                   "the restart after kill -9")

        # stop with force, then cancel a restart: nothing happens on cancel
        act(d, "web", "stop")
        confirm(d, force=True)
        wait_until(lambda: state_of(d, "web") == "STOPPED", 5, "web STOPPED (forced)")
        act(d, "web", "restart")
        wait_until(lambda: css(d, "dialog#confirm").get_attribute("open") is not None, 5)
        css(d, "#confirm-cancel").click()
        time.sleep(0.5)  # nothing may happen (waiting is the point)
        assert state_of(d, "web") == "STOPPED"

        # a narrow window (a laptop's half screen): the table still fits
        d.set_window_size(640, 900)
        wait_until(lambda: d.execute_script(
            "return document.documentElement.scrollWidth") <= 640, 5, "no sideways scroll")
        shot(d, "manager-ui-640")
        assert console_errors(d) == []


def test_the_page_asks_for_the_token_once_and_a_viewer_cannot_act(
        make_manager, tmp_path) -> None:
    write_token(tmp_path / "admin.token", "page-admin-token")
    write_token(tmp_path / "viewer.token", "page-viewer-token")
    m = make_manager([fast_service("web", "--interval", "0.5")], top={
        "auth_token_file": str(tmp_path / "admin.token"),
        "auth_tokens": [{"name": "viewer", "file": str(tmp_path / "viewer.token"),
                         "role": "read"}]})
    m.token = "page-admin-token"  # the test's own gRPC and HTTP calls
    m.start()
    with chromium() as d:
        d.get(f"http://127.0.0.1:{m.http_port}/ui/")
        wait_until(lambda: css(d, "dialog#token-dialog").get_attribute("open") is not None,
                   10, "the token prompt")
        assert css(d, "#conn").get_attribute("data-state") == "denied"
        css(d, "#token-input").send_keys("wrong-token")
        css(d, "#token-save").click()
        wait_until(lambda: css(d, "dialog#token-dialog").get_attribute("open") is not None
                   and "not accepted" in css(d, "#token-message").text, 10,
                   "the prompt again for a wrong token")
        css(d, "#token-input").send_keys("page-viewer-token")
        css(d, "#token-save").click()
        wait_until(lambda: state_of(d, "web") == "RUNNING", 10, "the table with a token")
        assert css(d, "#caller").text == "viewer (read)"
        for action in ("start", "stop", "restart"):
            button = css(d, f'tr[data-service="web"] button[data-action="{action}"]')
            assert not button.is_enabled()
        assert d.execute_script("return sessionStorage.getItem('backendai.token')") == \
            "page-viewer-token"
        assert d.get_cookies() == []
        # a reload keeps the tab's token: no prompt again
        d.refresh()
        wait_until(lambda: state_of(d, "web") == "RUNNING", 10, "the table after reload")
        assert all(e.get_attribute("open") is None
                   for e in d.find_elements("css selector", "dialog#token-dialog"))
        shot(d, "manager-ui-viewer")
        # the admin token acts
        d.execute_script("sessionStorage.setItem('backendai.token', 'page-admin-token')")
        d.refresh()
        wait_until(lambda: css(d, "#caller").text == "default (admin)", 10)
        act(d, "web", "restart")
        pid = m.status("web").pid
        confirm(d)
        wait_until(lambda: m.status("web").pid not in (0, pid)
                   and state_of(d, "web") == "RUNNING", 10, "the restart")
    assert "page-admin-token" not in m.logs() and "page-viewer-token" not in m.logs()


def test_the_page_shows_an_update_and_its_steps_live(env) -> None:
    from tests.update_support import started, update

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    name = m.status().name
    with chromium(window=(1280, 1000)) as d:
        d.get(f"http://127.0.0.1:{m.http_port}/ui/")
        wait_until(lambda: state_of(d, name) == "RUNNING", 10, "the service RUNNING")
        assert cell(d, name, "version").text == "1.0.0"
        op = update(m, "1.1.0")
        wait_until(lambda: cell(d, name, "version").text == "1.1.0", 60, "the new version")

        def step(s: str) -> str:
            found = d.find_elements("css selector", f'#update-steps li[data-step="{s}"]')
            return found[0].get_attribute("data-status") if found else ""

        wait_until(lambda: all(step(s) == "ok" for s in ("download", "verify", "stage", "stop",
                                                          "switch", "start", "health",
                                                          "commit")), 20, "every step ok")
        wait_until(lambda: "Succeeded" in css(d, "#update").text, 10, "the outcome")
        assert "1.1.0" in css(d, "#update").text
        assert state_of(d, name) == "RUNNING"
        shot(d, "manager-ui-update")
        assert console_errors(d) == []
    assert m.status().update.last_operation_id == op


def test_the_page_reconnects_after_the_manager_is_killed(make_manager) -> None:
    """kill -9 of the manager: the page says it is reconnecting, and once a manager is
    back on the same address it is live again, showing the re-adopted service."""
    m = make_manager([fast_service("web", "--interval", "0.5")]).start()
    port = m.http_port
    with chromium() as d:
        d.get(f"http://127.0.0.1:{port}/ui/")
        wait_until(lambda: state_of(d, "web") == "RUNNING", 10, "web RUNNING")
        pid = cell(d, "web", "pid").text
        m.kill9()
        wait_until(lambda: css(d, "#conn").get_attribute("data-state") in
                   ("reconnecting", "connecting"), 10, "the page notices")
        # the same address again (the port this manager just held, as a restart would)
        m.top["http_listen"] = f"127.0.0.1:{port}"
        m.start()
        wait_until(lambda: css(d, "#conn").get_attribute("data-state") == "live"
                   and state_of(d, "web") == "RUNNING", 20, "live again")
        assert cell(d, "web", "pid").text == pid  # the service kept running: re-adopted
        css(d, 'tr[data-service="web"] td.name').click()
        wait_until(lambda: "re-adopted" in css(d, "#detail").text, 5, "shown as re-adopted")


def test_services_a_reload_adds_and_removes_appear_without_a_reload(make_manager) -> None:
    """A config reload while the page is open: the added service's row appears (and
    acts), the removed one's row goes, with no page reload and no reconnect."""
    from tests.test_config_reload import rewrite

    web = fast_service("web", "--interval", "0.5")
    m = make_manager([web, fast_service("old", "--interval", "0.5")]).start()
    with chromium() as d:
        d.get(f"http://127.0.0.1:{m.http_port}/ui/")
        wait_until(lambda: state_of(d, "old") == "RUNNING", 10, "old RUNNING")
        css(d, 'tr[data-service="old"] td.name').click()
        d.execute_script("window.sameDocument = true")
        rewrite(m, [web, fast_service("new", "--interval", "0.5")])
        assert m.http("POST", "/reload")[0] == 200

        def rows() -> list[str]:
            return [r.get_attribute("data-service") for r in
                    d.find_elements("css selector", "#services-body tr")]

        wait_until(lambda: rows() == ["web", "new"] and state_of(d, "new") == "RUNNING", 10,
                   "the added row live, the removed one gone")
        assert css(d, "#services-count").text == "2"
        assert d.execute_script("return window.sameDocument") is True  # no page reload
        assert css(d, "#detail-name").text == "web"  # the removed service was selected
        act(d, "new", "stop")
        confirm(d)
        wait_until(lambda: state_of(d, "new") == "STOPPED", 5, "the added service acts")
        assert css(d, "#conn").get_attribute("data-state") == "live"
        shot(d, "manager-ui-reloaded")
        assert console_errors(d) == []


def event_items(driver: Any) -> list[dict[str, str]]:
    """The page's event list, newest first: kind, text, who and result of each item."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#events-list li')].map((li) => ({
          id: li.dataset.id, kind: li.dataset.kind, subject: li.dataset.subject,
          text: (li.querySelector('.text') || {}).textContent || '',
          who: (li.querySelector('.who') || {}).textContent || '',
          result: (li.querySelector('.result') || {}).textContent || ''}));""")


def test_the_page_shows_a_services_events_live_with_who_did_it(make_manager, tmp_path) -> None:
    """The selected service's recent events, and new ones as they happen: a kill -9 (the
    state change with its reason, the automatic restart) and an operator's stop from the
    page (the audit event: the token's name, the transport, the caller's address, the
    result)."""
    write_token(tmp_path / "admin.token", "events-admin-token")
    write_token(tmp_path / "ops.token", "events-ops-token")
    m = make_manager([fast_service("web", "--interval", "0.5"),
                      fast_service("worker", "--interval", "0.5")], top={
        "auth_token_file": str(tmp_path / "admin.token"),
        "auth_tokens": [{"name": "ops", "file": str(tmp_path / "ops.token"),
                         "role": "admin"}]})
    m.token = "events-admin-token"
    m.start()
    with chromium(window=(1280, 1100)) as d:
        d.get(f"http://127.0.0.1:{m.http_port}/ui/")
        d.execute_script("sessionStorage.setItem('backendai.token', 'events-ops-token')")
        d.refresh()
        wait_until(lambda: state_of(d, "worker") == "RUNNING", 10, "worker RUNNING")
        css(d, 'tr[data-service="worker"] td.name').click()
        wait_until(lambda: any(e["kind"] == "service.state" and "RUNNING" in e["text"]
                               for e in event_items(d)), 10, "the recent events of worker")
        assert css(d, "#events-name").text == "worker"
        assert {e["subject"] for e in event_items(d)} == {"service/worker"}
        # kill -9: the state change with its reason and the restart appear live
        pid = m.status("worker").pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: any(e["kind"] == "service.restart" for e in event_items(d))
                   and any(e["kind"] == "service.state" and "SIGKILL" in e["text"]
                           for e in event_items(d)), 10, "the kill -9 and the restart")
        # an operator's stop from the page: who, over which transport, from where, result
        wait_until(lambda: state_of(d, "worker") == "RUNNING", 10, "worker back")
        act(d, "worker", "stop")
        confirm(d)
        wait_until(lambda: state_of(d, "worker") == "STOPPED", 10, "worker STOPPED")
        audit = wait_until(lambda: next((e for e in event_items(d)
                                         if e["kind"] == "audit.stop"), None), 10,
                           "the audit event of the stop")
        assert audit["who"].startswith("by ops over http from 127.0.0.1:"), audit
        assert audit["result"] == "→ ok"
        desired = next(e for e in event_items(d) if e["kind"] == "service.desired")
        assert "by ops over http" in desired["who"]
        ids = [int(e["id"]) for e in event_items(d)]
        assert ids == sorted(ids, reverse=True)  # newest first, none twice
        assert len(set(ids)) == len(ids)
        shot(d, "manager-ui-events")
        # another service: its own events only
        css(d, 'tr[data-service="web"] td.name').click()
        wait_until(lambda: css(d, "#events-name").text == "web" and event_items(d)
                   and {e["subject"] for e in event_items(d)} == {"service/web"}, 10,
                   "web's events only")
        assert console_errors(d) == []
