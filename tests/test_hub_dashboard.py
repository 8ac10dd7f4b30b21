"""The hub's dashboard in a real browser: headless Chromium (Debian's, driven by
Selenium) against a real ai-hub and real ai-manager processes with real releases
(built with `aictl release build`, served from a store, installed per host).

The fleet page lists the hosts; a rollout started from the page (plan first, then a
confirmation) progresses live without a reload; a broken version shows the canary
failing with the step and the manager's reason, and the rollback; abort from the page
stops a rollout; pause, resume, promote and retry-failed each change the rollout's state
(and a viewer's token cannot); a host's page stops, starts and restarts its service and
tails its log.
Screenshots of each page go to tests/artifacts/ (and, with AI_DOCS_IMG=1, to
docs/img/, where one of each is kept).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from backendai.auth import write_token
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from tests.conftest import ROOT, fast_service
from tests.fixtures.components import chromium, wait_until
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for
from tests.fixtures.real_fleet import publish_releases, real_managers, wait_running

pytestmark = pytest.mark.slow

HOSTS = 3
TOKEN = "dashboard-token-1"
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_IMG = ROOT / "docs" / "img"


def shot(driver, name: str) -> Path:
    """Save a screenshot as a test artifact (and into docs/img/ when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"hub-{name}.png"
    # bars at their final widths, not mid-animation
    driver.execute_script("for (const e of document.querySelectorAll('.progress .seg'))"
                          " e.style.transition = 'none';")
    driver.save_screenshot(str(path))
    if os.environ.get("AI_DOCS_IMG"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / path.name)
    return path


def css(driver, selector: str):
    return driver.find_element(By.CSS_SELECTOR, selector)


def texts(driver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def confirm(driver, reason: str = "") -> None:
    wait_until(lambda: css(driver, "dialog#confirm").get_attribute("open") is not None, 5,
               "the confirmation dialog")
    if reason:
        css(driver, "#confirm-reason").send_keys(reason)
    css(driver, "#confirm-ok").click()


def rollout_state(driver) -> str:
    return css(driver, "#rollout-state").get_attribute("data-value")


def row_state(driver, host: str) -> str:
    return css(driver, f'#rollout-hosts-body .row[data-host="{host}"]').get_attribute("data-state")


def start_from_page(driver, hub, version: str, *, waves: str = "1, 100%",
                    promote: bool = False, healthy: str = "") -> str:
    """Fill the new-rollout form, preview the plan, start it, confirm; the new id."""
    driver.get(f"{hub.http_url}/ui/#/rollouts")
    wait_until(lambda: css(driver, "#new-rollout").is_displayed(), 10)
    if css(driver, "#new-rollout").get_attribute("open") is None:
        css(driver, "#new-rollout summary").click()
    for field, value in (("#ro-version", version), ("#ro-waves", waves),
                         ("#ro-healthy", healthy)):
        box = css(driver, field)
        box.clear()
        if value:
            box.send_keys(value)
    if css(driver, "#ro-promote").is_selected() != promote:
        css(driver, "#ro-promote").click()
    assert not css(driver, "#ro-start").is_enabled()  # the plan comes first
    css(driver, "#ro-preview").click()
    wait_until(lambda: css(driver, "#ro-plan").is_displayed()
               and css(driver, "#ro-start").is_enabled(), 10, "the plan")
    plan = css(driver, "#ro-plan").text
    assert f"Plan: {version} to {HOSTS} hosts in 2 waves" in plan, plan
    waves_shown = texts(driver, "#ro-plan-waves li")
    assert len(waves_shown) == 2 and "canary" in waves_shown[0]
    shot(driver, "rollouts")
    before = hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts
    css(driver, "#ro-start").click()
    confirm(driver)
    wait_until(lambda: "#/rollouts/r" in driver.current_url, 10, "the rollout's page")
    rid = driver.current_url.rsplit("/", 1)[1]
    assert rid not in {r.id for r in before}
    return rid


@pytest.fixture
def fleet(tmp_path, make_manager, store_server):
    out = publish_releases(tmp_path, {"1.0.0": {}, "1.1.0": {},
                                      "1.2.0": {"behavior": {"unhealthy": True}}, "1.3.0": {}})
    with real_managers(make_manager, tmp_path, out, store_server, HOSTS,
                       healthy_deadline=4.0, min_healthy_time=0.3) as managers:
        wait_running(managers.values())
        hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in managers.items()}, token=TOKEN,
                      labels={n: {"site": "lab", "rack": str(i)}
                              for i, n in enumerate(sorted(managers))})
        try:
            hub.start()
            yield hub, managers
        finally:
            hub.cleanup()


def test_rollouts_from_the_page_live_with_reasons_rollback_and_abort(fleet):
    hub, managers = fleet
    with chromium() as d:
        # the page asks for the token once, then shows the fleet
        d.get(f"{hub.http_url}/ui/")
        wait_until(lambda: css(d, "#token-dialog").get_attribute("open") is not None, 10,
                   "the token prompt")
        css(d, "#token-input").send_keys(TOKEN)
        css(d, "#token-save").click()
        wait_until(lambda: len(texts(d, "#hosts-body .row")) == HOSTS
                   and css(d, "#conn").text == "Live", 15, "the fleet table, live")
        wait_until(lambda: all(r.get_attribute("data-reachable") == "true"
                               for r in d.find_elements(By.CSS_SELECTOR, "#hosts-body .row")),
                   20, "every manager reachable")
        assert texts(d, "#hosts-body .cell.name") == sorted(managers)
        assert set(texts(d, "#hosts-body .cell.version")) == {"1.0.0"}
        assert "site=lab rack=0" in texts(d, "#hosts-body .cell.labels")[0]
        css(d, "#host-search").send_keys("rack=2")
        wait_until(lambda: [r.get_attribute("data-host") for r in d.find_elements(
            By.CSS_SELECTOR, "#hosts-body .row") if r.is_displayed()] == ["host-2"], 5, "search")
        css(d, "#host-search").send_keys(Keys.CONTROL, "a", Keys.DELETE)
        wait_until(lambda: all(r.is_displayed() for r in d.find_elements(
            By.CSS_SELECTOR, "#hosts-body .row")), 5, "every host shown again")
        shot(d, "hosts")

        # a rollout started from the page progresses live, without a reload
        rid = start_from_page(d, hub, "1.1.0", healthy="1")  # each wave takes a second
        d.execute_script("window.__sameDocument = true")
        seen_states, seen_progress = set(), []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen_states.update(r.get_attribute("data-state") for r in d.find_elements(
                    By.CSS_SELECTOR, "#rollout-hosts-body .row"))
                label = css(d, "#rollout-progress").get_attribute("aria-label")
                if not seen_progress or seen_progress[-1] != label:
                    seen_progress.append(label)
                if rollout_state(d) == "SUCCEEDED":
                    break
            time.sleep(0.05)
        assert rollout_state(d) == "SUCCEEDED", seen_progress
        final = wait_until(lambda: (label := css(d, "#rollout-progress").get_attribute(
            "aria-label")).endswith(" succeeded") and label, 5)
        if seen_progress[-1] != final:
            seen_progress.append(final)
        assert d.execute_script("return window.__sameDocument === true")  # no reload
        assert seen_states & {"UPDATING", "VERIFYING"}, seen_states  # seen mid-way
        assert len(seen_progress) >= 3, seen_progress  # it moved while we watched
        assert seen_progress[-1] == f"{HOSTS} hosts: {HOSTS} succeeded"
        assert texts(d, "#rollout-waves .wave-status") == ["done", "done"]
        shot(d, "rollout")
        assert {m.status().version for m in managers.values()} == {"1.1.0"}

        # a broken version: the canary fails its health check, its manager rolls back,
        # and the page says which host, at which step, and why
        rid = start_from_page(d, hub, "1.2.0")
        wait_until(lambda: rollout_state(d) == "ROLLED_BACK", 90, "the rollout rolled back")
        canary = hub.rollout(rid).waves[0].hosts[0]
        problem = css(d, f'#problem-list li[data-host="{canary}"]')
        assert "Rolled back" in problem.text
        assert "failed at health" in problem.find_element(By.CSS_SELECTOR, ".where").text
        reason = problem.find_element(By.CSS_SELECTOR, ".reason").text
        row = next(h for h in hub.rollout(rid).hosts if h.name == canary)
        assert reason == row.reason and "rolled back" in reason and "health" in reason, reason
        assert row_state(d, canary) == "ROLLED_BACK"
        others = [n for n in managers if n != canary]
        assert {row_state(d, n) for n in others} == {"SKIPPED"}
        assert css(d, "#rollout-message").text.startswith("Halted: wave 0")
        Select(css(d, "#rollout-filter")).select_by_value("problems")
        wait_until(lambda: [r.get_attribute("data-host") for r in d.find_elements(
            By.CSS_SELECTOR, "#rollout-hosts-body .row") if r.is_displayed()] == [canary], 5)
        shot(d, "rollout-failed")
        assert {m.status().version for m in managers.values()} == {"1.1.0"}

        # abort from the page stops a rollout: the canary went, the rest never start
        rid = start_from_page(d, hub, "1.3.0", promote=True)
        wait_until(lambda: rollout_state(d) == "WAITING", 90, "canary done, waiting")
        assert css(d, "#rollout-promote").is_enabled()
        css(d, "#rollout-abort").click()
        confirm(d, reason="wrong release")
        wait_until(lambda: rollout_state(d) == "ABORTED", 30, "aborted")
        done = hub.wait_rollout(rid, TERMINAL, 10)
        assert done.state == pb.ROLLOUT_STATE_ABORTED and "wrong release" in done.message
        canary = done.waves[0].hosts[0]
        assert {row_state(d, n) for n in managers if n != canary} == {"SKIPPED"}
        assert not css(d, "#rollout-abort").is_enabled()
        for name, m in managers.items():
            assert m.status().version == ("1.3.0" if name == canary else "1.1.0")
        # the rollout's events, live on its page: the start and the abort with who gave
        # them, and the rollout's own notes
        abort = wait_until(lambda: next((e for e in event_items(d, "rollout-events")
                                         if e["kind"] == "audit.rollout.abort"), None), 10,
                           "the abort in the rollout's events")
        assert abort["who"].startswith("by default over http from 127.0.0.1:"), abort
        assert abort["result"] == "→ ok" and abort["subject"] == f"rollout/{rid}"
        kinds = {e["kind"] for e in event_items(d, "rollout-events")}
        assert {"audit.rollout.start", "rollout.created", "rollout.finished"} <= kinds, kinds
        shot(d, "rollout-aborted")
        # the list shows all three, newest first, with their outcome
        d.get(f"{hub.http_url}/ui/#/rollouts")
        wait_until(lambda: [r.get_attribute("data-state") for r in d.find_elements(
            By.CSS_SELECTOR, "#rollouts-body tr")] == ["ABORTED", "ROLLED_BACK", "SUCCEEDED"],
            10, "the rollouts list")
        assert d.get_log("browser") == []  # no script errors along the way


def hub_pid(hub, host: str, service: str) -> int:
    """A service's pid as the hub reports it from the host's manager (0: not running)."""
    status, doc = hub.http("GET", f"/api/hosts/{host}")
    assert status == 200, doc
    svc = next(s for s in doc["services"] if s["name"] == service)
    return int(svc["pid"]) if svc["state"] == "RUNNING" else 0


def test_host_page_stops_starts_and_tails_the_log(tmp_path, make_manager):
    m = make_manager([fast_service("web")], name="solo").start()
    hub = HubProc(tmp_path, {"solo": m.grpc_addr})
    try:
        hub.start()
        with chromium() as d:
            d.get(f"{hub.http_url}/ui/#/hosts/solo")
            wait_until(lambda: css(d, '#services-body tr[data-service="web"]')
                       .get_attribute("data-state") == "RUNNING", 20, "the service, running")
            wait_until(lambda: "started pid=" in css(d, "#log").text, 15, "the log tail")
            css(d, '#services-body tr[data-service="web"] button[data-action="stop"]').click()
            confirm(d)
            wait_until(lambda: css(d, '#services-body tr[data-service="web"]')
                       .get_attribute("data-state") == "STOPPED", 15, "stopped from the page")
            assert m.status("web").state == mpb.SERVICE_STATE_STOPPED
            assert not css(d, 'button[data-action="stop"]').is_enabled()
            css(d, '#services-body tr[data-service="web"] button[data-action="start"]').click()
            confirm(d)
            wait_until(lambda: css(d, '#services-body tr[data-service="web"]')
                       .get_attribute("data-state") == "RUNNING", 15, "started from the page")
            wait_until(lambda: css(d, "#log").text.count("started pid=") >= 2, 15,
                       "the restarted service's output, live")
            # restart from the page: a new process, as the hub reports it from the manager
            before = wait_until(lambda: hub_pid(hub, "solo", "web"), 15,
                                "the running pid, through the hub")
            assert before == m.status("web").pid
            wait_until(lambda: css(d, '#services-body tr[data-service="web"] .pid').text
                       == str(before), 15, "the pid on the page")
            css(d, '#services-body tr[data-service="web"] button[data-action="restart"]').click()
            confirm(d)
            after = wait_until(lambda: (pid := hub_pid(hub, "solo", "web")) not in (0, before)
                               and pid, 15, "a new pid, through the hub")
            assert after == m.status("web").pid
            wait_until(lambda: css(d, '#services-body tr[data-service="web"] .pid').text
                       == str(after), 15, "the new pid on the page")
            assert css(d, '#services-body tr[data-service="web"]').get_attribute(
                "data-state") == "RUNNING"
            shot(d, "host")
            # narrow: a laptop half-screen still shows the essentials, nothing overflows
            d.set_window_size(640, 900)
            d.get(f"{hub.http_url}/ui/#/hosts")
            wait_until(lambda: texts(d, "#hosts-body .cell.name") == ["solo"], 10)
            width = d.execute_script("return document.documentElement.scrollWidth")
            assert width <= 640, width
            shot(d, "hosts-narrow")
            assert d.get_log("browser") == []
    finally:
        hub.cleanup()


def event_items(driver, list_id: str) -> list[dict[str, str]]:
    """An event list on the page, newest first: kind, subject, text, who, result."""
    return driver.execute_script("""
        return [...document.querySelectorAll(arguments[0] + ' li')].map((li) => ({
          id: li.dataset.id, kind: li.dataset.kind, subject: li.dataset.subject,
          text: (li.querySelector('.text') || {}).textContent || '',
          who: (li.querySelector('.who') || {}).textContent || '',
          result: (li.querySelector('.result') || {}).textContent || ''}));""",
                                 f"#{list_id}-list")


def test_host_page_shows_its_events_live_with_who_did_it(tmp_path, make_manager):
    """The host page's events come from the host's manager through the hub, live: a
    kill -9 of the service (its reason, the restart) and an operator's stop through the
    hub (the manager's audit record names the hub's token and the operator it acted
    for); the hub's own record of the host (its audit of the stop, reachability) is one
    choice away. A manager that goes away is said so, and its events come back with it."""
    m = make_manager([fast_service("web", "--interval", "0.5")], name="solo").start()
    hub = HubProc(tmp_path, {"solo": m.grpc_addr}, token=TOKEN)
    try:
        hub.start()
        with chromium(window=(1280, 1300)) as d:
            d.get(f"{hub.http_url}/ui/")
            d.execute_script(f"sessionStorage.setItem('backendai.token', '{TOKEN}')")
            d.get(f"{hub.http_url}/ui/#/hosts/solo")
            d.refresh()
            wait_until(lambda: css(d, '#services-body tr[data-service="web"]')
                       .get_attribute("data-state") == "RUNNING", 20, "the service, running")
            wait_until(lambda: any(e["kind"] == "service.state" and "RUNNING" in e["text"]
                                   for e in event_items(d, "host-events")), 15,
                       "the manager's recent events")
            # kill -9 of the service: the reason and the automatic restart, live
            os.kill(m.status("web").pid, 9)
            wait_until(lambda: any(e["kind"] == "service.restart"
                                   for e in event_items(d, "host-events"))
                       and any("SIGKILL" in e["text"] for e in event_items(d, "host-events")),
                       15, "the kill -9 and the restart")
            wait_until(lambda: css(d, '#services-body tr[data-service="web"]')
                       .get_attribute("data-state") == "RUNNING", 20, "running again")
            # an operator stops it through the hub: the manager's audit says who
            css(d, '#services-body tr[data-service="web"] button[data-action="stop"]').click()
            confirm(d)
            audit = wait_until(lambda: next((e for e in event_items(d, "host-events")
                                             if e["kind"] == "audit.stop"), None), 15,
                               "the manager's audit of the stop")
            assert audit["subject"] == "service/web"
            assert audit["who"].startswith("by anonymous for default over hub from 127.0.0.1:"), \
                audit
            assert audit["result"] == "→ ok"
            ids = [int(e["id"]) for e in event_items(d, "host-events")]
            assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
            shot(d, "host-events")
            # the hub's own record of the host: its audit of the same stop
            Select(css(d, "#events-source")).select_by_value("hub")
            hub_audit = wait_until(lambda: next((e for e in event_items(d, "host-events")
                                                 if e["kind"] == "audit.stop"), None), 15,
                                   "the hub's audit of the stop")
            assert hub_audit["subject"] == "host/solo"
            assert hub_audit["who"].startswith("by default over http from 127.0.0.1:")
            # back to the manager's; it goes away: the page says so, and catches up after
            Select(css(d, "#events-source")).select_by_value("manager")
            wait_until(lambda: any(e["kind"] == "audit.stop"
                                   for e in event_items(d, "host-events")), 15)
            m.kill9()
            wait_until(lambda: css(d, "#host-events-note").get_attribute("data-kind")
                       == "error" and "solo" in css(d, "#host-events-note").text, 20,
                       "the manager's absence, said")
            m.start()
            wait_until(lambda: any(e["kind"] == "manager.started"
                                   for e in event_items(d, "host-events")), 45,
                       "the restarted manager's events")
            assert d.get_log("browser") == []
    finally:
        hub.cleanup()


def fill_and_preview(driver, hub, version: str, *, waves: str, hosts: str = "",
                     start_stopped: bool = False) -> None:
    """The new-rollout form filled in and its plan asked for (not started)."""
    driver.get(f"{hub.http_url}/ui/#/rollouts")
    wait_until(lambda: css(driver, "#new-rollout").is_displayed(), 10)
    if css(driver, "#new-rollout").get_attribute("open") is None:
        css(driver, "#new-rollout summary").click()
    for field, value in (("#ro-version", version), ("#ro-waves", waves), ("#ro-hosts", hosts)):
        box = css(driver, field)
        box.clear()
        if value:
            box.send_keys(value)
    if css(driver, "#ro-start-stopped").is_selected() != start_stopped:
        css(driver, "#ro-start-stopped").click()
    css(driver, "#ro-preview").click()
    wait_until(lambda: css(driver, "#ro-plan").is_displayed()
               and f"Plan: {version} to" in css(driver, "#ro-plan").text
               and css(driver, "#ro-start").is_enabled(), 15, "the plan")


def start_planned(driver) -> str:
    css(driver, "#ro-start").click()
    confirm(driver)
    wait_until(lambda: "#/rollouts/r" in driver.current_url, 15, "the rollout's page")
    return driver.current_url.rsplit("/", 1)[1]


def why_cell(driver, host: str):
    return css(driver, f'#rollout-hosts-body .row[data-host="{host}"] .cell.why')


def test_rollout_page_store_check_start_stopped_and_operations_not_ours(fleet, store_server):
    """Issue 11 and 15 on the page: the dry run shows the store check per package (a
    version the store does not have: missing, with the URL looked at) and a real start
    of it is refused with the hub's reason on the page; a host whose service an
    operator stopped is skipped, "left stopped", unless the form asks start_stopped;
    a host running an operation this rollout did not start shows whose it is (its
    origin) while the rollout waits for it."""
    hub, managers = fleet
    with chromium(window=(1280, 1200)) as d:
        d.get(f"{hub.http_url}/ui/")
        d.execute_script(f"sessionStorage.setItem('backendai.token', '{TOKEN}')")
        d.refresh()
        wait_until(lambda: len(texts(d, "#hosts-body .row")) == HOSTS, 15, "the fleet")

        # a version the store does not have: missing in the plan, the start refused
        before = hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts
        fill_and_preview(d, hub, "9.9.9", waves="1, 100%")
        missing = css(d, '#ro-packages li[data-status="missing"]')
        assert "Missing" in missing.text
        assert f"{store_server.url}/9.9.9/agent-9.9.9.tar.gz" in missing.text, missing.text
        assert "refuses to start" in css(d, "#ro-store-warning").text
        shot(d, "rollout-missing-release")
        css(d, "#ro-start").click()
        confirm(d)
        error = wait_until(lambda: css(d, "#ro-error").text, 15, "the refusal on the page")
        assert "version 9.9.9 cannot be fetched by every target" in error, error
        assert "nothing was started" in error and "#/rollouts/r" not in d.current_url
        assert len(hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts) == len(before)
        # a version it has: available, named
        fill_and_preview(d, hub, "1.1.0", waves="1, 100%")
        assert texts(d, '#ro-packages li[data-status="available"]')
        assert not d.find_elements(By.CSS_SELECTOR, "#ro-store-warning")
        assert "left stopped" in css(d, "#ro-plan").text  # the rule, without start_stopped

        # an operator stopped host-0's service: installed, left stopped, skipped (why)
        stopped = managers["host-0"]
        stopped.stub().Stop(mpb.StopRequest(service="agent"), timeout=30)
        rid = start_planned(d)
        wait_until(lambda: rollout_state(d) == "SUCCEEDED", 90, "the rollout succeeded")
        assert row_state(d, "host-0") == "SKIPPED"
        cell = why_cell(d, "host-0")
        assert cell.find_element(By.CSS_SELECTOR, ".tag").text == "left stopped"
        assert "installed 1.1.0 but left stopped" in cell.text, cell.text
        assert "1 installed but left stopped" in css(d, "#rollout-message").text
        st = stopped.status()
        assert (st.version, st.state) == ("1.1.0", mpb.SERVICE_STATE_STOPPED)
        shot(d, "rollout-left-stopped")

        # with start_stopped, the stopped service is started and verified like the rest
        fill_and_preview(d, hub, "1.3.0", waves="1, 100%", start_stopped=True)
        assert "starts services an operator had stopped" in css(d, "#ro-plan").text
        rid = start_planned(d)
        wait_until(lambda: rollout_state(d) == "SUCCEEDED", 90, "the rollout succeeded")
        assert row_state(d, "host-0") == "SUCCEEDED"
        assert "starts services an operator had stopped" in css(d, "#rollout-facts").text
        st = stopped.status()
        assert (st.version, st.state) == ("1.3.0", mpb.SERVICE_STATE_RUNNING)
        assert hub.rollout(rid).start_stopped

        # an operation the rollout did not start runs on host-1 (held in its download):
        # the row says whose, while the rollout waits for it
        fill_and_preview(d, hub, "1.1.0", waves="100%", hosts="host-1")
        store_server.hold = threading.Event()
        try:
            op = managers["host-1"].stub().Update(mpb.UpdateRequest(
                service="agent", version="1.1.0", origin="aictl:ops@laptop"), timeout=30)
            rid = start_planned(d)
            wait_until(lambda: css(d, '#rollout-hosts-body .row[data-host="host-1"]')
                       .get_attribute("data-waiting") == "true", 20, "the host waiting")
            cell = why_cell(d, "host-1")
            assert cell.find_element(By.CSS_SELECTOR, ".tag").text == \
                "not ours: aictl:ops@laptop"
            assert op.operation_id in cell.text and "did not start" in cell.text, cell.text
            row = next(h for h in hub.http("GET", f"/api/rollouts/{rid}")[1]["hosts"]
                       if h["name"] == "host-1")
            assert row["waiting"] == {"operation_id": op.operation_id,
                                      "origin": "aictl:ops@laptop"}
            shot(d, "rollout-waiting-foreign")
        finally:
            store_server.hold.set()
        wait_until(lambda: rollout_state(d) == "SUCCEEDED", 90, "the rollout succeeded")
        assert not why_cell(d, "host-1").find_elements(By.CSS_SELECTOR, ".tag")
        assert managers["host-1"].status().update.last_origin == "aictl:ops@laptop"
        # no script errors; the one network error is the refused start's answer
        assert [e["message"] for e in d.get_log("browser")
                if not ("/api/rollouts" in e["message"] and "409" in e["message"])] == []


VIEWER = "dashboard-viewer-2"


def control(driver, command: str, reason: str = "") -> None:
    """Click one of the rollout page's controls and confirm it."""
    button = css(driver, f"#rollout-{command}")
    wait_until(button.is_enabled, 10, f"{command} enabled")
    button.click()
    confirm(driver, reason=reason)


def use_token(driver, token: str) -> None:
    """The page with this token (as if it had been typed into the prompt before)."""
    driver.execute_script("sessionStorage.setItem('backendai.token', arguments[0])", token)
    driver.refresh()


def test_rollout_controls_pause_resume_promote_retry_and_a_viewer_cannot(procs, tmp_path):
    """Every control of the rollout page, from the page through its confirmation, with
    the rollout's state read back from the page and from the hub's API: promote at the
    wave boundary, pause (in-flight hosts finish, none starts), resume, and retry-failed
    of a host that failed (its manager fixed meanwhile). A viewer token (read role) sees
    the controls disabled, and a click the page would not allow is refused by the hub,
    nothing changed. Simulated managers (tests/fixtures/sim_manager.py: FAKE, one process
    for six hosts, so the waves take long enough to pause in)."""
    sim = procs(SimManagers, hosts=6, delay=1.0).start()  # a host: 1 s
    write_token(tmp_path / "viewer.token", VIEWER)
    hub = procs(HubProc, sim.hosts, token=TOKEN, extra={"auth_tokens": [
        {"name": "viewer", "file": str(tmp_path / "viewer.token"), "role": "read"}]}).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 6, 20)
    status, started = hub.http("POST", "/api/rollouts", {"version": "2.0", "strategy": {
        "waves": ["1", "100%"], "max_parallel": 1, "pause_until_promote": True,
        "max_failures_per_wave": "0", "auto_rollback": False}})
    assert status == 200, started
    rid = started["id"]

    def api_state() -> str:
        return hub.http("GET", f"/api/rollouts/{rid}")[1]["state"]

    with chromium(window=(1280, 1200)) as d:
        # a viewer: the rollout waits for promote, and every control is disabled
        d.get(f"{hub.http_url}/ui/#/rollouts/{rid}")
        use_token(d, VIEWER)
        wait_until(lambda: rollout_state(d) == "WAITING", 60, "canary done, waiting (viewer)")
        assert css(d, "#caller").text == "viewer (read)"
        for command in ("pause", "resume", "promote", "abort", "retry-failed"):
            button = css(d, f"#rollout-{command}")
            assert not button.is_enabled(), command
            assert button.get_attribute("title") == "This token is read-only", command
        # a click the page would not allow (the button enabled by hand): the hub refuses
        d.execute_script("const b = document.getElementById('rollout-promote');"
                         " b.disabled = false; b.click();")
        confirm(d)
        wait_until(lambda: css(d, "#notice").text.startswith("Promote failed:"), 10,
                   "the refusal on the page")
        assert css(d, "#notice").get_attribute("data-kind") == "error"
        assert api_state() == "WAITING" and rollout_state(d) == "WAITING"
        for command in ("pause", "promote", "abort"):
            status, body = hub.http("POST", f"/api/rollouts/{rid}/{command}", {}, token=VIEWER)
            assert status == 403, (command, status, body)
        assert api_state() == "WAITING"
        shot(d, "rollout-viewer")

        # the admin: promote, pause, resume, then retry-failed
        use_token(d, TOKEN)
        wait_until(lambda: rollout_state(d) == "WAITING", 15, "the rollout, as admin")
        assert css(d, "#caller").text == "default (admin)"
        assert not css(d, "#rollout-resume").is_enabled()  # not paused
        assert not css(d, "#rollout-retry-failed").is_enabled()  # nothing failed
        control(d, "promote", reason="canary looks fine")
        wait_until(lambda: rollout_state(d) == "RUNNING", 15, "promoted (page)")
        assert api_state() == "RUNNING"
        assert not css(d, "#rollout-promote").is_enabled()

        control(d, "pause", reason="lunch")
        wait_until(lambda: rollout_state(d) == "PAUSED", 15, "paused (page)")
        assert api_state() == "PAUSED"
        assert css(d, "#rollout-resume").is_enabled() and not css(d, "#rollout-pause").is_enabled()
        # paused: the host in flight finishes, no other starts
        paused = wait_until(lambda: (r := hub.http("GET", f"/api/rollouts/{rid}")[1])
                            ["counts"]["in_progress"] == 0 and r, 30, "in-flight hosts done")
        assert paused["state"] == "PAUSED" and paused["counts"]["pending"] >= 2, paused["counts"]
        pending = sorted(h["name"] for h in paused["hosts"] if h["state"] == "PENDING")
        shot(d, "rollout-paused")

        # the next host to be tried fails (its manager says so): the wave halts
        sim.rules([{"host": name, "version": "2.0", "outcome": "failed"} for name in pending])
        control(d, "resume")
        wait_until(lambda: rollout_state(d) == "FAILED", 60, "failed, halted (page)")
        failed = hub.http("GET", f"/api/rollouts/{rid}")[1]
        assert failed["state"] == "FAILED" and failed["counts"]["failed"] == 1, failed["counts"]
        broken = next(h["name"] for h in failed["hosts"] if h["state"] == "FAILED")
        assert broken in pending and row_state(d, broken) == "FAILED"
        assert set(pending) - {broken} <= {h["name"] for h in failed["hosts"]
                                           if h["state"] == "SKIPPED"}

        # fixed: retry-failed from the page takes the failed and skipped hosts again
        sim.rules([])
        control(d, "retry-failed", reason="manager fixed")
        wait_until(lambda: rollout_state(d) == "SUCCEEDED", 60, "retried, succeeded (page)")
        done = hub.wait_rollout(rid, TERMINAL, 10)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED
        assert row_state(d, broken) == "SUCCEEDED"
        assert sim.updates_per_host()[broken] == 2
        wait_for(lambda: {h["version"] for h in hub.http("GET", "/api/hosts")[1]["hosts"]}
                 == {"2.0"}, 15, "every host on 2.0")
        # each command is in the rollout's events (who gave it: test_rollouts_from_the_page...)
        kinds = wait_until(lambda: {e["kind"] for e in event_items(d, "rollout-events")}
                           >= {f"audit.rollout.{c}" for c in
                               ("promote", "pause", "resume", "retry_failed")}
                           and {e["kind"] for e in event_items(d, "rollout-events")}, 15,
                           "every command in the events")
        assert "audit.rollout.abort" not in kinds
        shot(d, "rollout-retried")
        # the viewer's refused click is the one network error
        assert [e["message"] for e in d.get_log("browser")
                if not (f"/api/rollouts/{rid}/promote" in e["message"]
                        and "403" in e["message"])] == []


# Layout shifts as Chrome reports them (the Web Vitals CLS input), from the page's load
# (buffered) on; those within 500 ms of a user's input do not count (hadRecentInput).
OBSERVE_SHIFTS = """
window.__shifts = [];
const describe = (s) => {
  const n = s.node;
  const name = !n ? "?" : n.id ? `#${n.id}` : `${n.nodeName.toLowerCase()}.${n.className}`;
  return `${name} y ${Math.round(s.previousRect.y)}->${Math.round(s.currentRect.y)}`;
};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (!e.hadRecentInput) {
      window.__shifts.push({ at: Math.round(e.startTime), value: e.value,
                             sources: (e.sources || []).map(describe) });
    }
  }
}).observe({ type: "layout-shift", buffered: true });
"""
GOOD_CLS = 0.1  # the Web Vitals "good" threshold


def layout_shift(driver) -> tuple[float, list[dict]]:
    shifts = driver.execute_script("return window.__shifts")
    return sum(s["value"] for s in shifts), shifts


def test_nothing_jumps_while_a_rollout_updates_the_page(procs):
    """Issue 12 item 5, measured: the fleet table during a rollout, and a rollout's own
    page from its load through its end (a host failing on the way, its reason appearing
    under "Needs attention"), each with a cumulative layout shift under 0.1. Simulated
    managers (FAKE: tests/fixtures/sim_manager.py), twelve hosts, a second each."""
    sim = procs(SimManagers, hosts=12, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, token=TOKEN).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 12, 20)
    strategy = {"waves": ["1", "100%"], "max_parallel": 2, "max_failures_per_wave": "2",
                "max_failures_total": "2", "auto_rollback": False}

    def start(version: str) -> str:
        status, r = hub.http("POST", "/api/rollouts", {"version": version,
                                                       "strategy": strategy})
        assert status == 200, r
        return r["id"]

    def versions(d) -> set[str]:
        return set(texts(d, "#hosts-body .cell.version"))

    with chromium(window=(1280, 900)) as d:
        # the fleet table, from its load through a whole rollout
        d.get(f"{hub.http_url}/ui/#/hosts")
        use_token(d, TOKEN)
        assert d.execute_script(
            "return PerformanceObserver.supportedEntryTypes.includes('layout-shift')")
        d.execute_script(OBSERVE_SHIFTS)
        wait_until(lambda: len(texts(d, "#hosts-body .row")) == 12 and versions(d) == {"1.0"},
                   15, "the fleet table")
        rid = start("2.0")
        seen = [versions(d)]
        deadline = time.monotonic() + 60
        while versions(d) != {"2.0"} and time.monotonic() < deadline:
            if versions(d) != seen[-1]:
                seen.append(versions(d))
            time.sleep(0.05)
        assert versions(d) == {"2.0"} and {"1.0", "2.0"} in seen, seen  # updated live
        hub.wait_rollout(rid, TERMINAL, 30)
        wait_until(lambda: css(d, "#active-rollout").get_attribute("hidden") is not None, 10,
                   "the finished rollout gone from the top bar")
        cls, shifts = layout_shift(d)
        assert cls < GOOD_CLS, shifts

        # a rollout's page, loaded as it starts, until it ends; one host fails on the way
        sim.rules([{"host": "agent-007", "version": "3.0", "outcome": "failed"}])
        rid = start("3.0")
        d.get(f"{hub.http_url}/ui/#/rollouts/{rid}")
        d.refresh()
        d.execute_script(OBSERVE_SHIFTS)
        progress = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                label = css(d, "#rollout-progress").get_attribute("aria-label")
                if label and (not progress or progress[-1] != label):
                    progress.append(label)
                if rollout_state(d) in ("SUCCEEDED", "FAILED"):
                    break
            time.sleep(0.05)
        assert rollout_state(d) in ("SUCCEEDED", "FAILED"), progress
        assert len(progress) >= 4, progress  # it moved while we watched
        problem = css(d, '#problem-list li[data-host="agent-007"]')
        assert "simulated download failure" in problem.text
        assert row_state(d, "agent-007") == "FAILED"
        cls, shifts = layout_shift(d)
        assert cls < GOOD_CLS, shifts
        shot(d, "rollout-steady")
        assert d.get_log("browser") == []


def test_a_late_notice_moves_nothing(procs):
    """The notice line appearing while someone reads the fleet table (no input of
    theirs: the hub came back with another token, so the page's reconnect is refused)
    moves none of the page: a cumulative layout shift of ~0 from that moment on, with
    the notice shown, announced (role=alert) and its text whole. Simulated managers."""
    sim = procs(SimManagers, hosts=12, delay=0.2).start()
    hub = procs(HubProc, sim.hosts, token=TOKEN).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 12, 20)
    with chromium(window=(1280, 900)) as d:
        d.get(f"{hub.http_url}/ui/#/hosts")
        use_token(d, TOKEN)
        wait_until(lambda: len(texts(d, "#hosts-body .row")) == 12
                   and css(d, "#conn").text == "Live", 15, "the fleet table, live")
        d.execute_script(OBSERVE_SHIFTS)
        settled = "const done = arguments[arguments.length - 1];" \
                  "requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 200)));"
        d.execute_async_script(settled)
        d.execute_script("window.__shifts = []")  # from here on: what the notice does
        table_top = css(d, "#hosts-body").rect["y"]

        hub.stop()
        hub.token = "another-token-2"
        hub.start(same_port=True)
        wait_until(lambda: css(d, "#notice").is_displayed(), 30, "the notice")
        notice = css(d, "#notice")
        assert notice.text == "The hub did not accept this token."
        assert notice.get_attribute("role") == "alert"
        assert notice.get_attribute("data-kind") == "error"
        d.execute_async_script(settled)
        cls, shifts = layout_shift(d)
        assert cls < 0.001, shifts
        assert css(d, "#hosts-body").rect["y"] == table_top
        shot(d, "late-notice")
