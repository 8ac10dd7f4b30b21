"""The one home of the naming rules every daemon and aictl enforce: release versions,
service names, fleet host names, dialable addresses and labels.

Every rule is a `fullmatch` (never `match` with `$`, which lets a trailing newline
through), so the hub refuses exactly what the managers refuse. Each `check_*` returns
the value when it is valid and raises `InvalidArgument` naming `what` when it is not;
config readers turn that into a `ConfigError` naming the key.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from backendai.errors import InvalidArgument

MAX_VERSION_LEN = 64
MAX_NAME_LEN = 64
MAX_LABELS = 32
MAX_LABEL_VALUE = 128
MAX_ADDRESS_LEN = 300
MAX_ORIGIN_LEN = 200

# Letters, digits, '.', '_', '+', '-', starting with a letter or digit; '..' is refused
# separately (a version names a directory and a URL segment).
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ADDRESS_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _shown(value: Any) -> str:
    return repr(str(value)[:80])


def is_version(value: Any) -> bool:
    return (isinstance(value, str) and value.isascii() and VERSION_RE.fullmatch(value)
            is not None and ".." not in value)


def check_version(version: Any, what: str = "version") -> str:
    """A release version, safe as a path component and a URL segment."""
    if not isinstance(version, str):
        raise InvalidArgument(f"{what} must be a string")
    if not version:
        raise InvalidArgument(f"{what} must not be empty")
    if len(version) > MAX_VERSION_LEN:
        raise InvalidArgument(f"{what} is longer than {MAX_VERSION_LEN} characters")
    if not is_version(version):
        raise InvalidArgument(
            f"{what} may only hold ASCII letters, digits, '.', '_', '+', '-' (no path "
            f"characters, no '..'), starting with a letter or digit; got {_shown(version)}")
    return version


def check_origin(origin: Any, what: str = "origin") -> str:
    """Who issues an update (UpdateRequest.origin, e.g. "hub:rollout/<id>"): at most
    MAX_ORIGIN_LEN printable characters; "" for an operator."""
    if not isinstance(origin, str):
        raise InvalidArgument(f"{what} must be a string")
    if len(origin) > MAX_ORIGIN_LEN or not origin.isprintable():
        raise InvalidArgument(f"{what} must be at most {MAX_ORIGIN_LEN} printable "
                              f"characters, got {_shown(origin)}"
                              + (f" ({len(origin)} characters)" if len(origin) > 80 else ""))
    return origin


def is_service_name(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and \
        SERVICE_NAME_RE.fullmatch(value) is not None


def check_service_name(name: Any, what: str = "service") -> str:
    if not is_service_name(name):
        raise InvalidArgument(f"{what}: a service name is 1-{MAX_NAME_LEN} of A-Z a-z 0-9 "
                              f". _ @ - starting with a letter or digit, got {_shown(name)}")
    return str(name)


def check_host_name(name: Any, what: str = "host") -> str:
    if not isinstance(name, str) or not name.isascii() or not HOST_NAME_RE.fullmatch(name):
        raise InvalidArgument(f"{what}: expected 1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ - "
                              f"starting with a letter or digit, got {_shown(name)}")
    return name


def default_host_name(fallback: str) -> str:
    """This machine's host name as a fleet host name (characters outside the allowed
    ones become "-"), or `fallback` when nothing usable is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:MAX_NAME_LEN].lstrip("-_.")
    return name or fallback


def check_address(address: Any, what: str) -> str:
    """A dialable "HOST:PORT" (host name, IPv4, or [IPv6]; port 1-65535)."""
    if not isinstance(address, str) or len(address) > MAX_ADDRESS_LEN:
        raise InvalidArgument(f"{what}: expected \"HOST:PORT\"")
    host, sep, port = address.rpartition(":")
    if not sep or not address.isascii() or not ADDRESS_HOST_RE.fullmatch(host) \
            or not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise InvalidArgument(f"{what}: expected \"HOST:PORT\" with port 1-65535, "
                              f"got {_shown(address)}")
    return address


def check_labels(labels: Any, what: str) -> dict[str, str]:
    """A table of label name -> printable value, bounded in count and size."""
    if not isinstance(labels, dict):
        raise InvalidArgument(f"{what}: expected a table of strings")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"{what}: at most {MAX_LABELS} labels")
    out = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key.isascii() or not LABEL_KEY_RE.fullmatch(key):
            raise InvalidArgument(f"{what}: bad label name {_shown(key)}")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE \
                or not value.isprintable():
            raise InvalidArgument(f"{what}.{key}: expected a printable string of at most "
                                  f"{MAX_LABEL_VALUE} characters")
        out[key] = value
    return out


def check_env(env: Any, what: str) -> dict[str, str]:
    """Environment variables: NAME = "value", names as a shell knows them, no NUL."""
    if not isinstance(env, dict):
        raise InvalidArgument(f"{what}: expected a table of NAME = \"value\"")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key) \
                or not isinstance(value, str) or "\x00" in value:
            raise InvalidArgument(f"{what}: bad entry {_shown(key)} (names are letters, "
                                  "digits and _, values strings without NUL)")
        out[key] = value
    return out
