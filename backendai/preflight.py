"""What a daemon checks at start beyond its config file, shared with `--check-config`:
the start calls these same functions, so `--check-config` refuses what the start
refuses, in the same words, and "ok" means the daemon will start (binding its ports and
taking its state directory's lock aside: a running daemon holds those).

Certificate and key files are checked while the config is read (backendai/tls.py), so
both paths meet those checks too.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backendai.errors import ConfigError

if TYPE_CHECKING:
    from backendai.events.config import SinkConfig


def check_state_dir(path: Path, key: str = "state_dir") -> None:
    """The daemon can create `path` (or it exists as a directory) and write in it."""
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        what = "is not a directory" if probe == path else f"cannot be created: {str(probe)!r} " \
            "is not a directory"
        raise ConfigError(f"{key}: {str(path)!r} {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {str(probe)!r} " \
            "is not writable"
        raise ConfigError(f"{key}: {str(path)!r} {what} by this user (uid {os.getuid()})")


def stored_schema_versions(path: Path) -> dict[str, int] | None:
    """What an SQLite state database at `path` records in `schema_versions` (component ->
    version), read without changing it; None when there is no database yet or it records
    nothing (the start creates or migrates it). Refused when this user cannot both read
    and write it, or it cannot be read."""
    if not path.exists():
        return None
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"state_dir: {path} is not readable and writable by this user "
                          f"(uid {os.getuid()})")
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT component, version FROM schema_versions").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return None
        raise ConfigError(f"state_dir: cannot read {path}: {exc}") from None
    return {str(c): int(v) for c, v in rows}


def check_sinks(sinks: Sequence[SinkConfig]) -> None:
    """Each `[[event_sinks]]` can be built as the start builds it (its secret,
    credentials and TLS files read and checked; nothing is sent): the same function,
    so the same words."""
    if not sinks:
        return
    from backendai.events.sinks.runner import make_sink  # noqa: PLC0415 - only with sinks

    for cfg in sinks:
        make_sink(cfg, source="check")
