"""backendai/validate.py: the one home of the naming rules. The manager, the hub and
aictl all call these, so a value one of them accepts is accepted by all (and the hub
never creates a rollout the managers would refuse)."""

from __future__ import annotations

import pytest

from backendai import validate
from backendai.errors import InvalidArgument

GOOD_VERSIONS = ["2.1.44", "1.0.0-rc.1", "1.0.0+build.5", "v2", "2024_11_30", "a" * 64]
BAD_VERSIONS = ["", "1..2", "2.1.44\n", "\n2.1.44", "a/b", "../x", ".1", "-1", "+1",
                "2.1.44 ", "2,1", "a" * 65, "ü1", "1\x00", "1\\2", "%2e%2e", None, 1.2, ["1"]]


@pytest.mark.parametrize("version", GOOD_VERSIONS)
def test_good_versions(version):
    assert validate.check_version(version) == version
    assert validate.is_version(version)


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_are_refused_with_the_field_named(version):
    assert not validate.is_version(version)
    with pytest.raises(InvalidArgument, match=r"^target version"):
        validate.check_version(version, "target version")


def test_version_errors_say_what_is_wrong():
    with pytest.raises(InvalidArgument, match=r"'\.\.'"):
        validate.check_version("1..2")
    with pytest.raises(InvalidArgument, match="longer than 64"):
        validate.check_version("1" * 65)
    with pytest.raises(InvalidArgument, match="must not be empty"):
        validate.check_version("")
    with pytest.raises(InvalidArgument, match="must be a string"):
        validate.check_version(5)


@pytest.mark.parametrize(("name", "ok"), [
    ("ai-agent", True), ("web@1", True), ("a.b_c-d", True), ("x" * 64, True),
    ("x" * 65, False), ("", False), ("-x", False), ("a/b", False), ("a\n", False),
    ("a b", False), ("ä", False), (None, False)])
def test_service_names(name, ok):
    assert validate.is_service_name(name) is ok
    if not ok:
        with pytest.raises(InvalidArgument, match=r"^service"):
            validate.check_service_name(name)


@pytest.mark.parametrize(("name", "ok"), [
    ("agent-1", True), ("host.example", True), ("a_b", True), ("h" * 64, True),
    ("h" * 65, False), ("", False), ("a@b", False), ("a/b", False), ("agent-1\n", False),
    ("ágent", False), (7, False)])
def test_host_names(name, ok):
    if ok:
        assert validate.check_host_name(name, "host") == name
    else:
        with pytest.raises(InvalidArgument, match=r"^host"):
            validate.check_host_name(name, "host")


@pytest.mark.parametrize(("address", "ok"), [
    ("127.0.0.1:3082", True), ("nas:8888", True), ("[::1]:3000", True),
    ("host.example:65535", True), ("host:0", False), ("host:65536", False),
    ("host", False), (":80", False), ("host:80\n", False), ("ho st:80", False),
    ("host:+80", False), ("host:0080000", False), ("a" * 400 + ":1", False),
    ("hóst:80", False), (None, False)])
def test_addresses(address, ok):
    if ok:
        assert validate.check_address(address, "manager") == address
    else:
        with pytest.raises(InvalidArgument, match=r"^manager"):
            validate.check_address(address, "manager")


def test_labels():
    assert validate.check_labels({"site": "berlin", "group": ""}, "labels") == {
        "site": "berlin", "group": ""}
    for bad in ({"bad key": "x"}, {"k\n": "x"}, {"k": 1}, {"k": "x" * 129}, {"k": "a\nb"},
                {f"k{i}": "v" for i in range(33)}, ["k"]):
        with pytest.raises(InvalidArgument, match=r"^target.labels"):
            validate.check_labels(bad, "target.labels")


def test_env():
    assert validate.check_env({"A_1": "x", "_B": ""}, "env") == {"A_1": "x", "_B": ""}
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"A": "x\x00"}, {"A": 1}, "A=1"):
        with pytest.raises(InvalidArgument, match=r"^env"):
            validate.check_env(bad, "env")


def test_default_host_name_is_a_valid_host_name():
    assert validate.check_host_name(validate.default_host_name("fallback"), "name")
