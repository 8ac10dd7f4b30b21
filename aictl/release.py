"""`aictl release build / keygen / publish`: the release tooling.

A release of version V is `hub-V.tar.gz` and `agent-V.tar.gz` plus `SHA256SUMS` (and,
with a signing key, `SHA256SUMS.sig`, a base64 detached Ed25519 signature of it) in
`OUT/V/`. Each archive's top level is the release root:

    VERSION            the version, one line
    bin/ai-agent       launcher: runs `python3 -m agent.main` with the release on PYTHONPATH
    agent/ backendai/  the code (the component and every local package it imports)
    vendor/            only with --vendor: the pinned third-party packages, copied from
                       the build host's environment (requirements.lock)

Without --vendor the host's Python must provide the pinned dependencies
(requirements.lock); `AI_PYTHON` picks the interpreter (default `python3`).
Archives are reproducible: sorted entries, fixed mtimes, owner root, no __pycache__.
"""

# Heavy imports (cryptography, urllib, the manager's modules) stay inside the functions
# that use them, so `aictl --help` starts fast:
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import ast
import base64
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("hub", "agent")
LOCAL_PACKAGES = ("backendai", "manager", "hub", "agent", "aictl")
SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")
EPOCH = 946684800  # 2000-01-01: a fixed mtime makes archives reproducible

LAUNCHER = """#!/bin/sh
# Launcher of the {component} release: runs its code from this release directory
# (symlinks resolved, so a later switch of current/ does not affect a running process).
here=$(cd "$(dirname "$0")/.." && pwd -P)
PYTHONPATH="$here:$here/vendor${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONPATH
exec "${{AI_PYTHON:-python3}}" -m {component}.main "$@"
"""


class ReleaseError(Exception):
    pass


# ---- build ----------------------------------------------------------------------------

def _imports(package_dir: Path) -> set[str]:
    """Top-level names a package's modules import."""
    found: set[str] = set()
    for path in package_dir.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def packages_for(source: Path, component: str) -> list[str]:
    """The component and every local package it (transitively) imports, plus backendai."""
    want = {component, "backendai"}
    todo = list(want)
    while todo:
        pkg = todo.pop()
        if not (source / pkg).is_dir():
            continue
        for name in _imports(source / pkg):
            if name in LOCAL_PACKAGES and name not in want:
                want.add(name)
                todo.append(name)
    return sorted(p for p in want if (source / p).is_dir())


def _tarinfo(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(files) if not f.endswith(SKIP_SUFFIXES)]
    return out


def _requirement_names(lock: Path) -> list[str]:
    names = []
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(line.split("==")[0].strip())
    return names


def vendor_files(lock: Path) -> list[tuple[Path, str]]:
    """(file, path inside vendor/) of each pinned distribution installed on this host and
    of everything those require (transitively; optional extras are left out)."""
    import re
    from importlib import metadata

    out: dict[str, Path] = {}
    todo = [(n, True) for n in _requirement_names(lock)]
    seen: set[str] = set()
    while todo:
        name, required = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if not required:
                continue  # a dependency only under an environment marker we do not use
            raise ReleaseError(f"--vendor: {name} is not installed in {sys.prefix}") from None
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if "extra" in marker:
                continue
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip())
            if m:
                todo.append((m.group(0), not marker.strip()))
        for f in dist.files or []:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(SKIP_SUFFIXES):
                continue
            src = Path(str(dist.locate_file(f)))
            if src.is_file():
                out[rel] = src
    return sorted(((src, rel) for rel, src in out.items()), key=lambda t: t[1])


def build_archive(dest: Path, component: str, version: str, source: Path, *,
                  vendor: bool = False) -> None:
    entries: list[tuple[str, bytes | Path, int]] = [
        ("VERSION", f"{version}\n".encode(), 0o644),
        (f"bin/ai-{component}", LAUNCHER.format(component=component).encode(), 0o755)]
    for pkg in packages_for(source, component):
        for path in _files(source / pkg):
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            entries.append((path.relative_to(source).as_posix(), path, mode))
    if vendor:
        entries += [(f"vendor/{rel}", src, 0o644) for src, rel in
                    vendor_files(source / "requirements.lock")]
    dirs = _all_dirs([n for n, _, _ in entries])
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for d in dirs:
                tar.addfile(_tarinfo(d, 0, 0o755, tarfile.DIRTYPE))
            for name, data, mode in sorted(entries, key=lambda e: e[0]):
                if isinstance(data, bytes):
                    tar.addfile(_tarinfo(name, len(data), mode), io.BytesIO(data))
                else:
                    with data.open("rb") as fh:
                        tar.addfile(_tarinfo(name, data.stat().st_size, mode), fh)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _all_dirs(names: list[str]) -> list[str]:
    out: set[str] = set()
    for n in names:
        p = Path(n).parent
        while str(p) != ".":
            out.add(p.as_posix())
            p = p.parent
    return sorted(out)


def sha256sums(directory: Path, names: list[str]) -> bytes:
    lines = []
    for name in sorted(names):
        h = hashlib.sha256()
        with (directory / name).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {name}\n")
    return "".join(lines).encode()


def sign(data: bytes, key_path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{key_path} is not an Ed25519 private key")
    return base64.b64encode(key.sign(data)) + b"\n"


def build(version: str, out: Path, *, source: Path = REPO, key: Path | None = None,
          vendor: bool = False, components: tuple[str, ...] = COMPONENTS) -> Path:
    """Build OUT/VERSION/{hub,agent}-VERSION.tar.gz + SHA256SUMS [+ .sig]; return the dir."""
    from backendai.validate import check_version

    check_version(version)
    target = out / version
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for comp in components:
        name = f"{comp}-{version}.tar.gz"
        build_archive(target / name, comp, version, source, vendor=vendor)
        names.append(name)
    sums = sha256sums(target, names)
    if key is not None:
        _write(target / "SHA256SUMS.sig", sign(sums, key))
    else:
        (target / "SHA256SUMS.sig").unlink(missing_ok=True)
    _write(target / "SHA256SUMS", sums)
    return target


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# ---- keygen -----------------------------------------------------------------------------

def keygen(prefix: Path) -> tuple[Path, Path]:
    """PREFIX.key (PKCS#8 PEM, mode 600) and PREFIX.pub (PEM); never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for p in (priv, pub):
        if p.exists():
            raise ReleaseError(f"{p} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    _write(priv, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)
    _write(pub, key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


# ---- publish ----------------------------------------------------------------------------

def _release_files(directory: Path) -> list[str]:
    names = [p.name for p in sorted(directory.iterdir())
             if p.is_file() and not p.name.startswith(".")]
    if "SHA256SUMS" not in names:
        raise ReleaseError(f"{directory} has no SHA256SUMS; build the release first")
    # SHA256SUMS last: a reader never sees checksums for packages not there yet.
    return [n for n in names if n != "SHA256SUMS"] + ["SHA256SUMS"]


def publish(directory: Path, store: str, *, credentials: Path | None = None,
            timeout: float = 60.0) -> list[str]:
    """Put OUT/VERSION's files under STORE/VERSION/ (file:// or HTTP PUT); return URLs."""
    import urllib.parse

    from backendai.validate import check_version

    version = check_version(directory.name)
    names = _release_files(directory)
    parts = urllib.parse.urlsplit(store)
    if parts.scheme == "file":
        base = Path(urllib.parse.unquote(parts.path)) / version
        base.mkdir(parents=True, exist_ok=True)
        for name in names:
            tmp = base / f".{name}.{uuid.uuid4().hex[:8]}"
            shutil.copyfile(directory / name, tmp)
            os.replace(tmp, base / name)
        return [(base / n).as_uri() for n in names]
    if parts.scheme not in ("http", "https"):
        raise ReleaseError(f"store must be file://, http:// or https://, got {store!r}")
    if "@" in parts.netloc:
        raise ReleaseError("put credentials in a file (--credentials), not in the URL")
    auth = None
    if credentials is not None:
        from backendai.package_store import load_credentials

        try:
            auth = load_credentials(credentials)
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot use credentials file: {exc}") from None
    urls = []
    for name in names:
        url = f"{store.rstrip('/')}/{version}/{name}"
        _put(url, directory / name, auth, timeout)
        urls.append(url)
    return urls


def _put(url: str, path: Path, auth: str | None, timeout: float) -> None:
    import urllib.error
    import urllib.request

    from backendai.package_store import redact

    with path.open("rb") as fh:
        req = urllib.request.Request(url, data=fh, method="PUT")  # noqa: S310 - scheme checked
        req.add_header("Content-Length", str(path.stat().st_size))
        req.add_header("Content-Type", "application/octet-stream")
        if auth:
            req.add_unredirected_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ReleaseError(f"PUT {redact(url)} failed: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ReleaseError(f"PUT {redact(url)} failed: "
                               f"{getattr(exc, 'reason', exc)}") from None


# ---- CLI --------------------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    target = build(args.version, Path(args.out), source=Path(args.source),
                   key=Path(args.key) if args.key else None, vendor=args.vendor)
    for p in sorted(target.iterdir()):
        if not p.name.startswith("."):
            print(p)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    priv, pub = keygen(Path(args.out))
    print(f"private key: {priv} (keep it secret; aictl release build --key {priv})")
    print(f"public key:  {pub} (manager config: package_public_key = \"{pub}\")")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    directory = Path(args.out) / args.version
    if not directory.is_dir():
        raise ReleaseError(f"{directory} does not exist; run aictl release build first")
    for url in publish(directory, args.to, credentials=Path(args.credentials)
                       if args.credentials else None):
        print(url)
    return 0


def _guard(func: object) -> object:
    def run(args: argparse.Namespace) -> int:
        from backendai.errors import BackendAIError

        try:
            return func(args)  # type: ignore[operator, no-any-return]
        except (ReleaseError, BackendAIError, OSError) as exc:
            print(f"aictl release: {exc}", file=sys.stderr)
            return 1
    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="build, sign and publish releases")
    rsub = release.add_subparsers(dest="release_command", metavar="ACTION", required=True)

    p = rsub.add_parser("build", help="build hub and agent packages of VERSION")
    p.add_argument("version")
    p.add_argument("--out", required=True, help="output directory (gets OUT/VERSION/)")
    p.add_argument("--key", default="", help="Ed25519 private key (PEM) to sign SHA256SUMS")
    p.add_argument("--vendor", action="store_true",
                   help="copy the pinned dependencies (requirements.lock) into vendor/")
    p.add_argument("--source", default=str(REPO), help=argparse.SUPPRESS)
    p.set_defaults(func=_guard(cmd_build))

    p = rsub.add_parser("keygen", help="make an Ed25519 signing key pair")
    p.add_argument("--out", required=True, help="path prefix: writes PREFIX.key, PREFIX.pub")
    p.set_defaults(func=_guard(cmd_keygen))

    p = rsub.add_parser("publish", help="put a built release into a package store")
    p.add_argument("version")
    p.add_argument("--out", required=True, help="the build output directory")
    p.add_argument("--to", required=True,
                   help="store base: file:///srv/store or http://nas:8888/api/raw "
                        "(files go to STORE/VERSION/NAME)")
    p.add_argument("--credentials", default="",
                   help="file with user:password or 'Bearer TOKEN' (HTTP stores)")
    p.set_defaults(func=_guard(cmd_publish))
