"""Admission control (hub/admission.py): the token bucket and its appointments with plain
values, the `[admission]` keys with wrong, missing, huge and hostile values, the retry
hint on the wire and how clients read it (backendai/hub_endpoints.py), and the loop that
waits it out (backendai/registration_loop.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w

from backendai.errors import RETRY_AFTER_TRAILER, ConfigError, ResourceExhausted
from backendai.hub_endpoints import next_address, retry_after
from backendai.registration_loop import Later, keep_trying
from hub import config as hub_config
from hub.admission import Admission, AdmissionConfig, TokenBucket


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the bucket


def test_the_burst_is_admitted_at_once_then_the_rate():
    b = TokenBucket(rate=10.0, burst=3, max_wait=60.0, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) > 0
    assert b.take(0.1) == 0.0        # one token back after 1/rate
    assert b.take(0.1) > 0
    assert b.take(10.0) == 0.0       # refilled, but never beyond the burst
    assert [b.take(10.0) for _ in range(3)][-1] > 0


def test_refused_callers_get_appointments_one_slot_apart():
    """Callers told to come back arrive at the admitted rate, not as the same storm."""
    b = TokenBucket(rate=10.0, burst=1, max_wait=60.0, now=0.0)
    assert b.take(0.0) == 0.0
    waits = [b.take(0.0) for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    # a caller refused a little later is booked after those already told
    assert b.take(0.05) == pytest.approx(0.55)
    # once the appointments have passed, the next refused caller starts a new queue
    b.take(10.0)
    assert b.take(10.0) == pytest.approx(0.1)


def test_a_refusal_never_asks_for_more_than_max_wait():
    b = TokenBucket(rate=1.0, burst=1, max_wait=5.0, now=0.0)
    b.take(0.0)
    waits = [b.take(0.0) for _ in range(20)]
    assert max(waits) == 5.0 and waits[:4] == [1.0, 2.0, 3.0, 4.0]
    assert b.booked <= 5.0


def test_a_clock_that_goes_backwards_refills_nothing():
    b = TokenBucket(rate=100.0, burst=1, max_wait=60.0, now=50.0)
    assert b.take(50.0) == 0.0
    assert b.take(10.0) > 0          # earlier than the last call: no tokens from it
    assert b.take(50.02) == 0.0


@pytest.mark.parametrize(("rate", "burst", "max_wait"), [
    (0.0, 1, 1.0), (-1.0, 1, 1.0), (math.inf, 1, 1.0), (math.nan, 1, 1.0), (1.0, 0, 1.0),
    (1.0, 1, 0.0)])
def test_a_bucket_refuses_nonsense_values(rate, burst, max_wait):
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, burst, max_wait, 0.0)


# ---------------------------------------------------------------- Admission


def test_admission_refuses_with_resource_exhausted_and_the_hint():
    clock = Clock()
    adm = Admission(AdmissionConfig(register_rate=2.0, register_burst=2, heartbeat_rate=0),
                    clock=clock)
    adm.admit("register")
    adm.admit("register")
    with pytest.raises(ResourceExhausted, match=r"register: .* 2 per second.*retry in 0\.5s") \
            as caught:
        adm.admit("register")
    assert caught.value.retry_after == pytest.approx(0.5)
    assert caught.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.http_status == 429
    assert caught.value.trailing_metadata() == ((RETRY_AFTER_TRAILER, "500"),)
    for _ in range(1000):
        adm.admit("heartbeat")      # a rate of 0 admits everything
    clock.now += 1.0
    adm.admit("register")
    assert adm.refused == {"register": 1, "heartbeat": 0}


def test_a_short_hint_is_still_at_least_a_millisecond_on_the_wire():
    assert ResourceExhausted("x", 0.0001).trailing_metadata() == ((RETRY_AFTER_TRAILER, "1"),)


# ---------------------------------------------------------------- [admission] keys


def load(tmp_path: Path, table: dict[str, Any] | None) -> hub_config.HubConfig:
    top: dict[str, Any] = {"state_dir": str(tmp_path / "hub"), "grpc_listen": "127.0.0.1:0"}
    if table is not None:
        top["admission"] = table
    path = tmp_path / "hub.toml"
    path.write_text(tomli_w.dumps(top))
    return hub_config.load(path)


def test_admission_defaults_and_values(tmp_path):
    assert load(tmp_path, None).admission == AdmissionConfig()
    cfg = load(tmp_path, {"register_rate": 50, "register_burst": 10, "heartbeat_rate": 0,
                          "heartbeat_burst": 1, "watch_connects": 0, "max_retry_after": 5})
    assert cfg.admission == AdmissionConfig(50.0, 10, 0.0, 1, 0, 5.0)


@pytest.mark.parametrize(("table", "error"), [
    ({"register_rate": -1}, r"admission\.register_rate: must be between 0 and 1e\+06"),
    ({"register_rate": "fast"}, r"admission\.register_rate: must be a number"),
    ({"register_rate": True}, r"admission\.register_rate: must be a number"),
    ({"register_rate": 1e300}, r"admission\.register_rate: must be between"),
    ({"register_burst": 0}, r"admission\.register_burst: must be between 1 and"),
    ({"register_burst": 2.5}, r"admission\.register_burst: must be an integer"),
    ({"heartbeat_rate": math.nan}, r"admission\.heartbeat_rate: must be between"),
    ({"heartbeat_burst": 10**12}, r"admission\.heartbeat_burst: must be between"),
    ({"watch_connects": -5}, r"admission\.watch_connects: must be between 0 and"),
    ({"max_retry_after": 0}, r"admission\.max_retry_after: must be between 1 and 3600"),
    ({"max_retry_after": 1e9}, r"admission\.max_retry_after: must be between 1 and 3600"),
    ({"register_rates": 5}, r"admission\.register_rates: unknown key"),
    ({"register_rate": "\x00; DROP TABLE"}, r"admission\.register_rate: must be a number"),
])
def test_bad_admission_keys_are_refused_naming_them(tmp_path, table, error):
    with pytest.raises(ConfigError, match=error):
        load(tmp_path, table)


def test_admission_must_be_a_table(tmp_path):
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path}"\ngrpc_listen = "127.0.0.1:0"\n'
                    'admission = 5\n')
    with pytest.raises(ConfigError, match="admission"):
        hub_config.load(path)


# ---------------------------------------------------------------- the client's side


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailers: Any = ()) -> None:
        self._code, self._trailers = code, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> Any:
        if isinstance(self._trailers, Exception):
            raise self._trailers
        return self._trailers


@pytest.mark.parametrize(("trailers", "expected"), [
    (((RETRY_AFTER_TRAILER, "1500"),), 1.5),
    (((RETRY_AFTER_TRAILER, b"250"),), 0.25),
    (((RETRY_AFTER_TRAILER, "99999999"),), 3600.0),        # clamped
    (((RETRY_AFTER_TRAILER, "-5"),), None),                 # hostile: ignored
    (((RETRY_AFTER_TRAILER, "1e9"),), None),
    (((RETRY_AFTER_TRAILER, "nan"),), None),
    (((RETRY_AFTER_TRAILER, "9" * 400),), None),
    (((RETRY_AFTER_TRAILER, ""),), None),
    ((), None),                                             # no hint: a plain failure
    (RuntimeError("no trailers"), None),
])
def test_the_retry_hint_is_read_carefully(trailers, expected):
    assert retry_after(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, trailers)) == expected


def test_only_resource_exhausted_carries_a_hint():
    hint = ((RETRY_AFTER_TRAILER, "1000"),)
    assert retry_after(FakeRpcError(grpc.StatusCode.UNAVAILABLE, hint)) is None
    assert retry_after(TimeoutError()) is None


def test_a_busy_hub_is_asked_again_not_skipped():
    """RESOURCE_EXHAUSTED is the hub's real answer: the client stays with that hub."""
    busy = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, ((RETRY_AFTER_TRAILER, "100"),))
    assert next_address(["a:1", "b:1"], "a:1", busy) == "a:1"


async def test_the_loop_waits_what_the_hub_asked_plus_at_most_ten_percent():
    results: list[bool | Later] = [False, False, Later(2.0), False, True, Later(-3.0)]
    delays: list[float] = []

    class Stop(Exception):
        pass

    async def attempt() -> bool | Later:
        return results.pop(0)

    async def sleep(delay: float) -> None:
        delays.append(round(delay, 6))
        if not results:
            raise Stop

    with pytest.raises(Stop):
        await keep_trying(attempt, interval=lambda: 5.0, base=lambda: 0.5, cap=lambda: 30.0,
                          roll=lambda: 1.0, sleep=sleep)
    # failures 1, 2; a "later" neither counts as a failure nor resets the count (the
    # next failure is the third: 2.0); a nonsense hint waits nothing
    assert delays == [0.5, 1.0, 2.2, 2.0, 5.5, 0.0]
