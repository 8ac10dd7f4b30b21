"""Typed reads of TOML tables for the hub's and the agent's config, with errors that
name the key, plus the validators both share (host names, addresses, labels, versions)."""

from __future__ import annotations

import math
import re
import socket
import sys
from pathlib import Path
from typing import Any

from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
ADDRESS_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252})$")
MAX_LABELS = 32
MAX_LABEL_VALUE = 128
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


def default_host_name(fallback: str) -> str:
    """This machine's host name as a fleet host name (characters outside the allowed
    ones become "-"), or `fallback` when nothing usable is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64].lstrip("-_.")
    return name or fallback


def check_host_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not HOST_NAME_RE.match(name):
        raise InvalidArgument(f"{what}: expected 1-64 of A-Z a-z 0-9 . _ - starting with a "
                              f"letter or digit, got {str(name)[:80]!r}")
    return name


def check_version(version: Any, what: str = "version") -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise InvalidArgument(f"{what}: expected 1-64 of A-Z a-z 0-9 . _ + - starting with "
                              f"a letter or digit, got {str(version)[:80]!r}")
    return version


def check_address(address: Any, what: str) -> str:
    """A dialable "HOST:PORT" (host name or IP, port 1-65535)."""
    if not isinstance(address, str) or len(address) > 300:
        raise InvalidArgument(f"{what}: expected \"HOST:PORT\"")
    host, sep, port = address.rpartition(":")
    if not sep or not ADDRESS_HOST_RE.match(host) or not port.isdigit() \
            or not 1 <= int(port) <= 65535:
        raise InvalidArgument(f"{what}: expected \"HOST:PORT\" with port 1-65535, "
                              f"got {address[:80]!r}")
    return address


def check_labels(labels: Any, what: str) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise InvalidArgument(f"{what}: expected a table of strings")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"{what}: at most {MAX_LABELS} labels")
    out = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            raise InvalidArgument(f"{what}: bad label name {str(key)[:80]!r}")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE \
                or not value.isprintable():
            raise InvalidArgument(f"{what}.{key}: expected a printable string of at most "
                                  f"{MAX_LABEL_VALUE} characters")
        out[key] = value
    return out


class Table:
    """Reads keys of one TOML table; `done()` rejects the keys nobody read."""

    def __init__(self, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or 'config'}: expected a table")
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str) or len(value) > 4096:
            raise ConfigError(f"{self.key(name)}: expected a string")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: expected one of {', '.join(choices)}, "
                              f"got {value!r}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false")
        return value

    def seconds(self, name: str, default: float, *, low: float = 0.0,
                high: float = 86400.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{self.key(name)}: expected seconds between {low:g} and "
                              f"{high:g}, got {value!r}")
        return float(value)

    def path(self, name: str, *, absolute: bool = False) -> Path | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(f"{self.key(name)}: expected a path")
        path = Path(value)
        if absolute and not path.is_absolute():
            raise ConfigError(f"{self.key(name)}: must be an absolute path")
        return path

    def listen(self, name: str, default: str) -> ListenAddress:
        try:
            return ListenAddress.parse(self.text(name, default))
        except ValueError as exc:
            raise ConfigError(f"{self.key(name)}: {exc}") from None

    def address(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            return ""
        try:
            return check_address(value, self.key(name))
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None

    def labels(self, name: str) -> dict[str, str]:
        value = self.raw(name)
        if value is None:
            return {}
        try:
            return check_labels(value, self.key(name))
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None

    def table(self, name: str) -> Any:
        return self.raw(name)

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(f"{self.key(key)}: unknown key")


def release_version(configured: str, anchors: list[Path]) -> str:
    """The running release's version: `configured`, else the first `VERSION` file found
    in the anchors (a release root holds one), else "unknown"."""
    if configured:
        return check_version(configured)
    for anchor in anchors:
        candidate = anchor / "VERSION"
        try:
            text = candidate.read_text()[:100].strip()
        except OSError:
            continue
        if VERSION_RE.match(text):
            return text
    return "unknown"


def release_anchors() -> list[Path]:
    """Where a daemon looks for its release's VERSION file: the working directory (a
    manager starts it inside current/) and the parent of the directory holding the
    executable (releases start with bin/ai-hub, bin/ai-agent)."""
    return [Path.cwd(), Path(sys.argv[0]).resolve().parent.parent]
