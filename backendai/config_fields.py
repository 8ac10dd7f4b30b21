"""Typed reads of TOML tables for the hub's and the agent's config, with errors that
name the key (the naming rules themselves live in backendai/validate.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.validate import check_address, check_labels, check_version, is_version

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


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
        if is_version(text):
            return text
    return "unknown"


def release_anchors() -> list[Path]:
    """Where a daemon looks for its release's VERSION file: the working directory (a
    manager starts it inside current/) and the parent of the directory holding the
    executable (releases start with bin/ai-hub, bin/ai-agent)."""
    return [Path.cwd(), Path(sys.argv[0]).resolve().parent.parent]
