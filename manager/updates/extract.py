"""Safe extraction of a release archive into `releases/VERSION`.

Everything is checked before a byte is written: absolute paths, `..`, links that leave
the release directory, device files and FIFOs, and size/file-count bombs are rejected
with a clear error. Extraction goes to a temporary directory beside the target and is
renamed into place only when complete, so `releases/VERSION` is either whole or absent.
Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from backendai.errors import BackendAIError
from manager.config import UpdateSource

if TYPE_CHECKING:
    import tarfile

MAX_NAME_LEN = 4096
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


class UnsafePackage(BackendAIError):
    """The archive is hostile or malformed: nothing of it was installed."""


def remove_tree(path: Path) -> None:
    """rm -rf. shutil (it loads bz2 and lzma, ~0.5 MB RSS) is imported only when a
    manager actually removes something, not by every manager that can update."""
    import shutil  # noqa: PLC0415

    shutil.rmtree(path, ignore_errors=True)

def _inside(path: str) -> bool:
    norm = posixpath.normpath(path)
    return not (norm == ".." or norm.startswith(("../", "/")))


def check_members(tar: tarfile.TarFile, limits: UpdateSource) -> list[tarfile.TarInfo]:
    """Every member, vetted (within `extract_max_files`, `extract_max_bytes`); raise
    UnsafePackage at the first hostile one."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for info in tar:
        name = info.name
        if len(members) >= limits.extract_max_files:
            raise UnsafePackage(f"archive has more than {limits.extract_max_files} entries")
        if len(name) > MAX_NAME_LEN or "\x00" in name:
            raise UnsafePackage("archive has an entry with an over-long or NUL name")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafePackage(f"archive entry {name!r} has an absolute path")
        if ".." in name.split("/"):
            raise UnsafePackage(f"archive entry {name!r} contains '..'")
        if info.ischr() or info.isblk() or info.isfifo() or info.isdev():
            raise UnsafePackage(f"archive entry {name!r} is a device file or FIFO")
        if info.issym():
            target = info.linkname
            if target.startswith("/") or not _inside(
                    posixpath.join(posixpath.dirname(name), target)):
                raise UnsafePackage(f"archive symlink {name!r} -> {target!r} leaves the "
                                    "release directory")
        elif info.islnk():
            if info.linkname.startswith("/") or not _inside(info.linkname):
                raise UnsafePackage(f"archive hard link {name!r} -> {info.linkname!r} "
                                    "leaves the release directory")
        elif not (info.isfile() or info.isdir()):
            raise UnsafePackage(f"archive entry {name!r} has an unsupported type")
        total += max(0, info.size)
        if total > limits.extract_max_bytes:
            raise UnsafePackage(f"archive unpacks to more than {limits.extract_max_bytes} "
                                "bytes")
        members.append(info)
    return members


def extract_release(archive: Path, releases_dir: Path, version: str,
                    limits: UpdateSource) -> Path:
    """Extract into releases_dir/version (replacing an old copy); return that path."""
    releases_dir.mkdir(parents=True, exist_ok=True)
    target = releases_dir / version
    tmp = releases_dir / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    import tarfile  # noqa: PLC0415 - with bz2/lzma ~0.8 MB RSS: loaded at the first update

    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = check_members(tar, limits)
                tmp.mkdir()
                # The "data" filter is a second line of defence behind check_members.
                tar.extractall(tmp, members=members, filter="data")
                # Read the compressed stream to its end, so gzip checks its CRC and length.
                while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                    pass
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # disk full, permissions: not the archive's fault
            raise UnsafePackage(f"archive is not a valid tar.gz: {exc}") from None
        stamp = tmp / "VERSION"
        if not stamp.is_file() or stamp.is_symlink():
            raise UnsafePackage("archive has no VERSION file at its top level")
        found = stamp.read_text(errors="replace").strip()
        if found != version:
            raise UnsafePackage(f"archive VERSION says {found[:64]!r}, expected {version!r}")
        fsync_tree(tmp)
        if target.exists() or target.is_symlink():
            trash = releases_dir / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            os.replace(target, trash)
            remove_tree(trash)
        os.replace(tmp, target)
        fsync_dir(releases_dir)
        return target
    finally:
        if tmp.exists():
            remove_tree(tmp)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory of a freshly extracted tree to disk."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            with contextlib.suppress(OSError):
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(dirpath))


def remove_leftovers(releases_dir: Path) -> list[str]:
    """Remove temporary and trash directories a crash left behind; return their names."""
    removed: list[str] = []
    if not releases_dir.is_dir():
        return removed
    for entry in releases_dir.iterdir():
        if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            remove_tree(entry)
            removed.append(entry.name)
    return removed
