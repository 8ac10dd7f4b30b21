"""What a daemon checks at start beyond its config file, shared with `--check-config`:
the start calls these same functions, so `--check-config` refuses what the start
refuses, in the same words, and "ok" means the daemon will start (binding its ports and
taking its state directory's lock aside: a running daemon holds those).

Certificate and key files are checked while the config is read (backendai/tls.py), so
both paths meet those checks too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from backendai.auth import load_token
from backendai.errors import ConfigError


def check_token_files(files: Iterable[tuple[Path | None, str]]) -> None:
    """Each configured token file (path, config key) is readable, private and holds one
    token, as `Token.from_file` reads it at start."""
    for path, key in files:
        if path is not None:
            load_token(path, key)


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
