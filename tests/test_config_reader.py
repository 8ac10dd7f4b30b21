"""The one config reader (backendai/config.py): typed reads with errors naming the full
key, defaults taken from the dataclass fields (written once), unknown keys refused at
every depth, and files read with errors naming the file."""

from __future__ import annotations

import dataclasses
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.config import AgentConfig
from backendai.config import Table, load_toml
from backendai.errors import ConfigError
from backendai.events.config import EventsConfig
from backendai.listen import ListenAddress
from hub import config as hub_config
from hub.config import HubConfig
from manager import config
from manager.config import (
    HealthGate,
    HubLink,
    ManagerConfig,
    RestartPolicy,
    ServiceConfig,
    UpdateSource,
)
from tests.conftest import ROOT
from tests.test_docs_config import section


def error(read: Any) -> str:
    with pytest.raises(ConfigError) as info:
        read()
    return str(info.value)


def manager_doc(**svc: Any) -> dict[str, Any]:
    return {"state_dir": "/var/lib/m", "services": [{"name": "svc", "command": ["true"], **svc}]}


# ---- scalars --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, False, 3.0, "3", None, [3]])
def test_an_integer_is_never_a_bool_float_or_string(value):
    t = Table({"n": value}, "svc")
    assert error(lambda: t.integer("n", low=0, high=10)).startswith("svc.n: must be an integer")


@pytest.mark.parametrize("value", [True, False, "1.0", [1]])
def test_a_number_is_never_a_bool_or_string(value):
    t = Table({"n": value}, "svc")
    assert error(lambda: t.number("n", low=0, high=10)).startswith("svc.n: must be a number")


@pytest.mark.parametrize("value", [1, 0, "true", "yes"])
def test_a_flag_is_only_a_bool(value):
    assert error(lambda: Table({"f": value}).flag("f")).startswith("f: must be true or false")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400,
                                   -(10**400), 1e308, 86400.5])
def test_numbers_are_finite_and_bounded(value):
    message = error(lambda: Table({"n": value}).number("n", low=0.0, high=86400.0))
    assert message.startswith("n: must be between 0 and 86400, got ")


@pytest.mark.parametrize("value", [10**30, -1, 2**63, 4097])
def test_integers_are_bounded_and_huge_ones_are_refused(value):
    message = error(lambda: Table({"n": value}).integer("n", low=0, high=4096))
    assert message.startswith("n: must be between 0 and 4096, got ")


def test_bounds_themselves_are_accepted():
    t = Table({"a": 0, "b": 86400, "c": 4096, "d": 0.05})
    assert t.number("a", low=0.0, high=1.0) == 0.0 and isinstance(t.number("a", low=0, high=1),
                                                                  float)
    assert t.number("b", low=0.0, high=86400.0) == 86400.0
    assert t.integer("c", low=4, high=4096) == 4096
    assert t.number("d", low=0.05, high=1.0) == 0.05


@pytest.mark.parametrize(("value", "message"), [
    (5, "must be a string"),
    ("a\x00b", "too long or contains NUL"),
    ("x" * 5000, "too long or contains NUL"),
])
def test_text(value, message):
    assert message in error(lambda: Table({"s": value}, "t").text("s"))


def test_paths():
    t = Table({"rel": "a/b", "empty": "", "abs": "/a/b", "num": 1})
    assert t.path("abs", absolute=True) == Path("/a/b")
    assert t.optional_path("rel") == Path("a/b")
    assert error(lambda: t.path("rel", absolute=True)) == "rel: must be an absolute path, got 'a/b'"
    assert error(lambda: t.optional_path("empty")) == "empty: must be a file path, got ''"
    assert error(lambda: t.optional_path("num")) == "num: must be a string, got 1"
    assert t.optional_path("absent") is None
    assert t.text("rel", absolute_path=False) == "a/b"
    assert "must be an absolute path" in error(lambda: t.text("rel", absolute_path=True))
    assert t.text("empty", absolute_path=True) == ""  # unset


def test_signals_exit_codes_and_argv():
    t = Table({"a": "int", "b": "SIGHUP", "c": "NOPE", "d": 15, "e": [0, 3], "f": [0, True],
               "g": ["x", "y"], "h": [], "i": ["x", ""], "j": ["x"] * 1001})
    assert t.signal_name("a") == signal.SIGINT and t.signal_name("b") == signal.SIGHUP
    assert "c: must be a signal name" in error(lambda: t.signal_name("c"))
    assert "d: must be a signal name" in error(lambda: t.signal_name("d"))
    assert t.exit_codes("e") == (0, 3)
    assert "f: must be a list of exit codes" in error(lambda: t.exit_codes("f"))
    assert t.argv("g") == ("x", "y")
    for name in "hi":
        assert f"{name}: must be a non-empty list" in error(lambda n=name: t.argv(n))
    assert "j: must hold at most 1000 arguments" in error(lambda: t.argv("j"))


def test_names_addresses_labels_env_and_versions_follow_validate_py():
    t = Table({"svc": "../evil", "host": "a b", "addr": "h:0", "listen": "example.com:1",
               "labels": {"a": 1}, "env": {"BAD-NAME": "x"}, "version": "1..2",
               "ok_version": "2.1.44", "ok_addr": "[::1]:3000"}, "x")
    assert error(lambda: t.service_name("svc")).startswith("x.svc: a service name is")
    assert error(lambda: t.host_name("host")).startswith("x.host: expected 1-64")
    assert error(lambda: t.address("addr")).startswith("x.addr: expected \"HOST:PORT\"")
    assert error(lambda: t.listen("listen")).startswith("x.listen: must be \"HOST:PORT\"")
    assert error(lambda: t.labels("labels")).startswith("x.labels.a: expected a printable")
    assert error(lambda: t.env("env")).startswith("x.env: bad entry 'BAD-NAME'")
    assert error(lambda: t.version("version")).startswith("x.version may only hold")
    assert t.version("ok_version") == "2.1.44" and t.address("ok_addr") == "[::1]:3000"


# ---- defaults, required keys, unknown keys ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
    needed: int
    count: int = 7
    names: tuple[str, ...] = ("a",)
    tags: dict[str, str] = dataclasses.field(default_factory=lambda: {"k": "v"})


def test_absent_keys_take_the_dataclass_defaults_and_fieldless_ones_are_required():
    t = Table({}, "s", defaults=Sample)
    assert t.integer("count", low=0, high=10) == 7
    assert t.labels("tags") == {"k": "v"}
    assert t.integer("count", low=0, high=10, default=3) == 3  # a computed default wins
    assert error(lambda: t.integer("needed", low=0, high=10)) == \
        "s.needed: required (an integer, 0 to 10)"
    assert error(lambda: t.address("no_such_field")).startswith("s.no_such_field: required")


def test_parts_share_what_was_read_so_one_done_sees_every_key():
    t = Table({"count": 1, "other": 2, "bogus": 3}, "s", defaults=Sample)
    t.part(RestartPolicy).integer("other", low=0, high=5, default=0)
    t.integer("count", low=0, high=5)
    assert error(t.done) == "s.bogus: unknown key"


def test_a_prefix_ending_in_a_colon_names_a_file():
    t = Table({"hosts": [{"name": "a"}]}, "/etc/hosts.toml:")
    [host] = t.tables("hosts", most=10)
    assert error(lambda: host.address("manager")).startswith(
        "/etc/hosts.toml: hosts[0].manager: required")


def test_tables_and_arrays_of_tables():
    t = Table({"sub": 1, "arr": {"x": 1}, "many": [{}] * 3, "bad": [{}, 5]})
    assert error(lambda: t.table("sub")) == "sub: must be a table, got 1"
    assert "arr: must be an array of tables ([[arr]])" in error(lambda: t.tables("arr", most=9))
    assert error(lambda: t.tables("many", most=2)) == "many: at most 2 [[many]] tables"
    assert error(lambda: t.tables("bad", most=9)) == "bad[1]: must be a table, got 5"
    assert t.table("absent") is None and t.tables("absent", most=1) == []
    assert "absent: at least one [[absent]]" in error(
        lambda: t.tables("absent", most=1, required=True))


def test_a_parsed_minimal_service_is_the_dataclass_defaults():
    svc = config.parse(manager_doc()).primary
    assert svc.policy == RestartPolicy()
    assert svc.update == UpdateSource()
    assert svc.health == HealthGate()
    # only the computed defaults are code: the package and host-backend names
    assert svc == ServiceConfig(name="svc", command=("true",), package="svc",
                                unit="svc.service", rc_script="/etc/rc.d/rc.svc")
    rcd = config.parse(manager_doc(backend="rcd")).primary
    assert rcd.log_file == "/var/log/svc.log"


def test_a_parsed_minimal_manager_hub_and_agent_are_the_dataclass_defaults(tmp_path):
    cfg = config.parse({"state_dir": "/var/lib/m", "hub": {"address": "10.0.0.2:3000",
                                                           "name": "h1"},
                        "services": [{"name": "svc", "command": ["true"]}]})
    assert cfg == ManagerConfig(state_dir=Path("/var/lib/m"), services=cfg.services,
                                hub=HubLink(address="10.0.0.2:3000", name="h1"),
                                events=EventsConfig(source="h1/agent-manager"))
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path}"\ninsecure_no_auth = true\n')
    assert hub_config.load(path) == HubConfig(state_dir=tmp_path, insecure_no_auth=True,
                                                 events=EventsConfig(source="hub/hub"))
    path = tmp_path / "agent.toml"
    path.write_text('name = "a1"\ngrpc_listen = "127.0.0.1:0"\n')
    assert agent_config.load(path) == AgentConfig(name="a1",
                                                  grpc_listen=ListenAddress("127.0.0.1", 0))


def _rendered(value: Any) -> str | None:
    """A default as docs write it in TOML; None for those described in words."""
    if isinstance(value, signal.Signals):
        return f'"{value.name.removeprefix("SIG")}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple) and value:
        return "[" + ", ".join(repr(v) for v in value) + "]"
    if (isinstance(value, str) and value) or isinstance(value, ListenAddress | Path):
        return f'"{value}"'
    return None


@pytest.mark.parametrize(("doc", "heading", "classes"), [
    ("CONFIG.md", "Top level", [ManagerConfig]),
    ("CONFIG.md", "`[hub]`", [HubLink]),
    ("CONFIG.md", "`[[services]]`", [ServiceConfig, RestartPolicy, UpdateSource, HealthGate]),
    ("CONFIG_HUB_AGENT.md", "Hub", [HubConfig]),
    ("CONFIG_HUB_AGENT.md", "Agent", [AgentConfig]),
])
def test_documented_defaults_are_the_dataclass_defaults(doc, heading, classes):
    """The dataclass is where a default lives; the docs must say the same."""
    text = section(ROOT / "docs" / doc, heading)
    cells = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+?) \|", text, flags=re.MULTILINE))
    checked = 0
    for cls in classes:
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default
            want = _rendered(default) if default is not dataclasses.MISSING else None
            if want is None or f.name not in cells:
                continue
            assert cells[f.name] == f"`{want}`", f"{cls.__name__}.{f.name}"
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize(("doc", "message"), [
    ({"services": [{"name": "svc", "command": ["true"], "health_probe": "grpc",
                    "health_target": "h:1", "health_tls": {"bogus": 1}}]},
     "services[0].health_tls.bogus: unknown key"),
    ({"services": [{"name": "svc", "command": ["true"], "bogus": 1}]},
     "services[0].bogus: unknown key"),
    ({"services": [{"name": "a", "command": ["true"]}, {"name": "b", "command": ["true"],
                                                         "policy": {}}]},
     "services[1].policy: unknown key"),
    ({"hub": {"address": "h:1", "tls": {"ca": "x"}}}, "hub.tls.ca: unknown key"),
    ({"hub": {"address": "h:1", "bogus": 1}}, "hub.bogus: unknown key"),
    ({"tls": {"cert_file": "/c", "key_file": "/k", "bogus": 1}}, "tls.bogus: unknown key"),
])
def test_unknown_keys_in_nested_tables_name_the_full_key(doc, message):
    data = {"state_dir": "/var/lib/m", "services": [{"name": "svc", "command": ["true"]}],
            **doc}
    assert error(lambda: config.parse(data)) == message


def test_required_keys_say_what_is_expected():
    assert error(lambda: config.parse({"services": []})) == \
        "state_dir: required (an absolute path)"
    assert error(lambda: config.parse({"state_dir": "/m", "services": [{}]})) == \
        "services[0].name: required (a service name)"
    assert error(lambda: config.parse({"state_dir": "/m", "services": [{"name": "a"}]})) == \
        "services[0].command: required for backend \"process\""


def test_the_service_version_is_a_release_version():
    assert config.parse(manager_doc(version="2.1.44")).primary.version == "2.1.44"
    assert error(lambda: config.parse(manager_doc(version="1..2"))).startswith(
        "services[0].version may only hold")


# ---- files ----------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b"a = [1", "invalid TOML"),
    (b"a = \"\xff\"\n", "not UTF-8"),
    (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1048576 bytes"),
])
def test_load_toml_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    text = error(lambda: load_toml(path))
    assert repr(str(path)) in text and message in text


def test_load_toml_reads_a_file_of_exactly_the_limit_and_names_a_missing_one(tmp_path):
    path = tmp_path / "c.toml"
    body = b"a = 1\n"
    path.write_bytes(body + b"#" * ((1 << 20) - len(body) - 1) + b"\n")
    assert load_toml(path) == {"a": 1}
    assert error(lambda: load_toml(tmp_path / "nope.toml")) == \
        f"cannot read {str(tmp_path / 'nope.toml')!r}: No such file or directory"
    assert "cannot read" in error(lambda: load_toml(tmp_path))  # a directory
