"""The on-host release layout under a service's install_root:

    releases/VERSION/      one directory per installed release
    current -> releases/VERSION   a relative symlink, switched atomically
    .downloads/OPID/       an operation's downloads (removed when it ends)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from backendai.validate import is_version
from manager.updates.extract import TMP_PREFIX, TRASH_PREFIX, fsync_dir, remove_tree


class ReleaseDirs:
    def __init__(self, install_root: str) -> None:
        self.root = Path(install_root)
        self.releases = self.root / "releases"
        self.current = self.root / "current"
        self.downloads = self.root / ".downloads"

    def current_version(self) -> str:
        """The release `current` points at, or "" when there is none."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return ""
        name = Path(target).name
        return name if (self.releases / name).is_dir() else ""

    def has(self, version: str) -> bool:
        return (self.releases / version / "VERSION").is_file()

    def on_disk(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(e.name for e in self.releases.iterdir()
                      if e.is_dir() and not e.is_symlink()
                      and not e.name.startswith((TMP_PREFIX, TRASH_PREFIX))
                      and is_version(e.name))

    def switch(self, version: str) -> None:
        """Point `current` at releases/VERSION atomically (symlink + rename). Blocking."""
        if not self.has(version):
            raise FileNotFoundError(f"release {version} is not on disk")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".current-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.join("releases", version), tmp)
        try:
            os.replace(tmp, self.current)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.root)

    def clear_current(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.current)
        fsync_dir(self.root)

    def remove(self, version: str) -> None:
        """Delete a release: renamed away first, so it vanishes atomically. Blocking."""
        src = self.releases / version
        trash = self.releases / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        os.replace(src, trash)
        remove_tree(trash)

    def download_dir(self, op_id: str) -> Path:
        return self.downloads / op_id

    def remove_downloads(self, keep: set[str]) -> None:
        if not self.downloads.is_dir():
            return
        for entry in self.downloads.iterdir():
            if entry.name not in keep:
                remove_tree(entry)
        with contextlib.suppress(OSError):
            self.downloads.rmdir()
