"""What a daemon checks at start beyond its config file, shared with `--check-config`:
the start calls these same functions, so `--check-config` refuses what the start
refuses, in the same words, and "ok" means the daemon will start (binding its ports and
taking its state directory's lock aside: a running daemon holds those).

Certificate and key files are checked while the config is read (backendai/tls.py), so
both paths meet those checks too.
"""

from __future__ import annotations

import os
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


def check_sinks(sinks: Sequence[SinkConfig]) -> None:
    """Each `[[event_sinks]]` can be built as the start builds it (its secret,
    credentials and TLS files read and checked; nothing is sent): the same function,
    so the same words."""
    if not sinks:
        return
    from backendai.events.sinks.runner import make_sink  # noqa: PLC0415 - only with sinks

    for cfg in sinks:
        make_sink(cfg, source="check")
