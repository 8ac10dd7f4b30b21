"""The event model and its query rules, with plain values: bounded events, filters and
pages (every bad value a clear InvalidArgument naming the parameter), the HTTP query
string, and what a service's status changes amount to (manager/supervision/history.py)."""

from __future__ import annotations

import math

import pytest

from backendai.errors import InvalidArgument
from backendai.events import http_query
from backendai.events.model import (
    MAX_FIELD_VALUE,
    MAX_FIELDS,
    MAX_MESSAGE,
    Event,
    PageRequest,
    check_filter,
    check_known,
    check_page,
    make_event,
    page_of,
    to_json,
)
from manager.supervision.history import changes
from manager.supervision.states import ServiceStatus, State


def test_make_event_bounds_every_part():
    ev = make_event("service.state", "service/" + "x" * 1000, "m" * 10_000,
                    {f"k{i}": "v" * 5000 for i in range(100)} | {"none": None}, at=1.0,
                    actor="a" * 1000, peer="p" * 1000, result="r" * 5000)
    assert len(ev.subject) == 256 and ev.subject.endswith("…")
    assert len(ev.message) == MAX_MESSAGE
    assert len(ev.fields) == MAX_FIELDS and "none" not in ev.fields
    assert all(len(v) == MAX_FIELD_VALUE for v in ev.fields.values())
    assert len(ev.actor) == 300 and len(ev.result) == MAX_MESSAGE
    flags = make_event("a.b", "s", fields={"yes": True, "no": False, "n": 3}, at=0)
    assert flags.fields == {"yes": "true", "no": "false", "n": "3"}


@pytest.mark.parametrize("kind", ["", "Service.state", "service..state", "1abc", "a b"])
def test_make_event_refuses_a_bad_kind(kind):
    with pytest.raises(ValueError, match="not an event kind"):
        make_event(kind, "s", at=0)


def test_filters():
    assert check_filter("audit.").kind_prefix
    assert check_filter("audit*").kind == "audit" and check_filter("audit*").kind_prefix
    assert check_filter("*").kind == "" and check_filter("*").kind_prefix
    assert not check_filter("service.state").kind_prefix
    assert check_filter(subject="service/web-*").subject_glob
    assert not check_filter(subject="service/web").subject_glob
    flt = check_filter("service.", "service/w?b", 10, 20)
    ok = Event("service.state", "service/web", at=15)
    assert flt.matches(ok)
    assert not flt.matches(Event("audit.stop", "service/web", at=15))
    assert not flt.matches(Event("service.state", "service/webby", at=15))
    assert not flt.matches(Event("service.state", "service/web", at=21))
    assert not flt.matches(Event("service.state", "service/web", at=9))


@pytest.mark.parametrize(("args", "names"), [
    (("Audit",), "kind"), (("audit..x",), "kind"), (("a b",), "kind"), (("x" * 200,), "kind"),
    (("a.*.b",), "kind"), ((3,), "kind"), (("%",), "kind"), (("audit.'; DROP",), "kind"),
    (("", "x" * 300), "subject"), (("", "service/[ab]"), "subject"),
    (("", "bad\x00nul"), "subject"), (("", "line\nbreak"), "subject"),
    (("", "", -1), "since"), (("", "", math.nan), "since"), (("", "", math.inf), "since"),
    (("", "", 1e300), "since"), (("", "", 0, -5), "until"), (("", "", True), "since"),
    (("", "", 20, 10), "since"),
])
def test_bad_filters_name_the_parameter(args, names):
    with pytest.raises(InvalidArgument, match=names):
        check_filter(*args)


@pytest.mark.parametrize(("kw", "names"), [
    ({"limit": 1001}, "limit"), ({"limit": -1}, "limit"), ({"limit": 2**40}, "limit"),
    ({"limit": True}, "limit"), ({"limit": "5"}, "limit"),
    ({"after_id": -1}, "after_id"), ({"after_id": 2**64}, "after_id"),
    ({"before_id": 2**63}, "before_id"), ({"after_id": 5, "before_id": 6}, "after_id"),
    ({"after_id": 7, "before_id": 6}, "after_id"), ({"newest_first": "yes"}, "newest_first"),
])
def test_bad_pages_name_the_parameter(kw, names):
    with pytest.raises(InvalidArgument, match=names):
        check_page(check_filter(), **kw)


def test_limit_zero_is_the_default_and_ids_from_the_future_are_refused():
    assert check_page(check_filter(), limit=0).limit == 100
    check_known(10, after_id=10, before_id=11)
    with pytest.raises(InvalidArgument, match="after_id 11 is beyond the newest event id 10"):
        check_known(10, after_id=11)
    with pytest.raises(InvalidArgument, match="before_id"):
        check_known(10, before_id=12)


def test_page_cursors():
    evs = [Event("a.b", "s", id=i) for i in (3, 4, 5)]
    forward = page_of(PageRequest(limit=3), evs, 9, 1)
    assert (forward.next_after_id, forward.next_before_id) == (5, 0)
    assert page_of(PageRequest(limit=4), evs, 9, 1).next_after_id == 0  # not full: no more
    back = page_of(PageRequest(limit=3, newest_first=True), evs[::-1], 9, 1)
    assert (back.next_after_id, back.next_before_id) == (0, 3)


def test_to_json_has_stable_keys():
    ev = Event("audit.stop", "service/web", "m", {"a": "1"}, 1.5, "alice", "grpc", "1.2.3.4:5",
               "ok", id=7)
    assert to_json(ev, source="h/agent-manager") == {
        "id": 7, "at": 1.5, "kind": "audit.stop", "subject": "service/web", "message": "m",
        "fields": {"a": "1"}, "actor": "alice", "transport": "grpc", "peer": "1.2.3.4:5",
        "result": "ok", "source": "h/agent-manager"}


# ---- GET /api/events's query string -------------------------------------------------------

def test_http_query_defaults_and_order():
    req = http_query.page_request({})
    assert req.newest_first and req.limit == 100 and req.after_id == 0
    req = http_query.page_request({"after_id": "5", "limit": "20"})
    assert not req.newest_first and req.after_id == 5 and req.limit == 20
    req = http_query.page_request({"subject": "service/web", "limit": "20"})
    assert req.newest_first and req.filter.subject == "service/web"
    req = http_query.page_request({"since": "2024-05-01T03:12:00Z", "until": "1714533130.5"})
    assert req.filter.since == 1714533120.0 and req.filter.until == 1714533130.5
    assert http_query.page_request({"since": "2024-05-01T03:12:00"}).filter.since == 1714533120


@pytest.mark.parametrize(("query", "names"), [
    ({"limit": "0"}, "limit"), ({"limit": ""}, "limit"), ({"limit": "1001"}, "limit"),
    ({"limit": "-3"}, "limit"), ({"limit": "9" * 40}, "limit"), ({"limit": "1e3"}, "limit"),
    ({"after_id": "x"}, "after_id"), ({"after_id": "99999999999999999999"}, "after_id"),
    ({"before_id": "-1"}, "before_id"), ({"order": "sideways"}, "order"),
    ({"since": "yesterday"}, "since"), ({"since": "9" * 50}, "since"),
    ({"until": "2024-13-45"}, "until"), ({"since": "300000000000"}, "since"),
    ({"kind": "AUDIT"}, "kind"), ({"subject": "x" * 500}, "subject"),
    ({"since": "2024-05-02", "until": "2024-05-01"}, "since"),
])
def test_http_query_bad_values(query, names):
    with pytest.raises(InvalidArgument, match=names):
        http_query.page_request(query)


# ---- status changes to events ---------------------------------------------------------------

def st(state: State, **kw) -> ServiceStatus:
    return ServiceStatus(name="web", state=state, **kw)


def kinds(old: ServiceStatus, new: ServiceStatus) -> list[str]:
    return [c.kind for c in changes(old, new)]


def test_a_crash_and_restart_give_state_and_restart_events_with_the_reason():
    old = st(State.RUNNING, pid=10)
    new = st(State.STARTING, pid=0, restarts=1, exit_code=None, exit_signal=9,
             message="killed by SIGKILL")
    found = changes(old, new)
    assert [c.kind for c in found] == ["service.state", "service.restart"]
    state, restart = found
    assert state.message == "RUNNING -> STARTING: killed by SIGKILL"
    assert state.fields["exit_signal"] == "SIGKILL" and state.fields["pid"] == 10
    assert restart.fields["restarts"] == 1 and "killed by SIGKILL" in restart.message


def test_stale_reasons_are_not_repeated_on_later_changes():
    old = st(State.STARTING, restarts=1, exit_code=1, message="exited with code 1")
    new = st(State.RUNNING, pid=5, restarts=1, exit_code=1, message="exited with code 1")
    (state,) = changes(old, new)
    assert state.message == "STARTING -> RUNNING"
    assert state.fields["exit_code"] is None and state.fields["reason"] is None


def test_fatal_adoption_and_health():
    fatal = changes(st(State.BACKOFF, message="x"),
                    st(State.FATAL, exit_code=1, message="crash loop: 6 crashes within 60s"))
    assert fatal[0].message.endswith("crash loop: 6 crashes within 60s")
    assert fatal[0].fields["exit_code"] == 1
    assert kinds(st(State.STOPPED), st(State.RUNNING, pid=7, adopted=True)) == [
        "service.state", "service.adopted"]
    health = changes(st(State.RUNNING, health="healthy"),
                     st(State.RUNNING, health="unhealthy", health_message="HTTP 500",
                        health_failures=3))
    assert [c.kind for c in health] == ["service.health"]
    assert health[0].message == "health healthy -> unhealthy: HTTP 500"
    assert kinds(st(State.RUNNING, version="1"), st(State.RUNNING, version="2")) == []
