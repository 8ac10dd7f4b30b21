"""Package handling pieces on real files and a real HTTP store: version validation,
fetching (http + file, Range resume, retries, limits, credentials), SHA256SUMS and
Ed25519 verification, and safe extraction against each kind of hostile tarball."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from backendai.errors import InvalidArgument, NotFound, Unavailable
from backendai.package_store import load_credentials, sibling_url
from backendai.validate import check_version as validate_version
from manager.config import UpdateSource
from manager.updates.extract import UnsafePackage, extract_release
from manager.updates.fetch import (
    FetchFailed,
    FetchPolicy,
    TooLarge,
    fetch,
)
from manager.updates.verify import VerifyFailed, parse_sums, verify_package

FAST = FetchPolicy(UpdateSource(download_timeout=5.0, download_retries=2,
                                package_max_bytes=1 << 20), backoff=0.01)

# `store_server` (tests/update_support.py, through conftest): a StoreServer
# serving tmp_path/store.


# ---- versions -------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["2.1.44", "1.0.0-rc.1", "v3", "1.2.3+build.7", "a_b"])
def test_valid_versions(good):
    assert validate_version(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "x/..", "a/b", "..", "1..2", ".hidden", "-x",
                                 "1" * 1000, "2.1.44\u00e9", "\u0662.\u0661", "a b", "a\x00b",
                                 "a\\b", "%2e%2e", None, 42])
def test_invalid_versions_are_refused(bad):
    with pytest.raises(InvalidArgument):
        validate_version(bad)


# ---- fetch --------------------------------------------------------------------------------

def test_http_fetch_streams_the_file(store_server, tmp_path):
    data = os.urandom(300_000)
    (store_server.root / "1.0").mkdir()
    (store_server.root / "1.0" / "a.tar.gz").write_bytes(data)
    dest = tmp_path / "a.tar.gz"
    assert fetch(f"{store_server.url}/1.0/a.tar.gz", dest, FAST) == len(data)
    assert dest.read_bytes() == data


def test_http_404_is_not_found_without_retries(store_server, tmp_path):
    with pytest.raises(NotFound, match="404"):
        fetch(f"{store_server.url}/9.9/a.tar.gz", tmp_path / "x", FAST)
    assert len(store_server.requests) == 1


def test_unreachable_store_fails_after_bounded_retries(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        url = f"http://127.0.0.1:{s.getsockname()[1]}/1.0/a.tar.gz"
        with pytest.raises(Unavailable, match=r"after 3 attempts.*unreachable"):
            fetch(url, tmp_path / "x", FAST, sleep=lambda _s: None)
    finally:
        s.close()


def test_truncated_download_is_resumed_with_range(store_server, tmp_path):
    data = os.urandom(200_000)
    (store_server.root / "a.bin").write_bytes(data)
    store_server.truncate = 1
    dest = tmp_path / "a.bin"
    assert fetch(f"{store_server.url}/a.bin", dest, FAST, sleep=lambda _s: None) == len(data)
    assert dest.read_bytes() == data
    ranges = [h.get("Range") for _m, _p, h in store_server.requests]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(data) // 2}-"


def test_resume_restarts_when_the_server_ignores_range(store_server, tmp_path):
    data = os.urandom(100_000)
    (store_server.root / "a.bin").write_bytes(data)
    store_server.truncate, store_server.ranges = 1, False
    dest = tmp_path / "a.bin"
    assert fetch(f"{store_server.url}/a.bin", dest, FAST, sleep=lambda _s: None) == len(data)
    assert dest.read_bytes() == data


def test_always_truncated_download_fails(store_server, tmp_path):
    (store_server.root / "a.bin").write_bytes(os.urandom(100_000))
    store_server.truncate = 100
    with pytest.raises(Unavailable, match=r"truncated|interrupted"):
        fetch(f"{store_server.url}/a.bin", tmp_path / "a.bin", FAST, sleep=lambda _s: None)


def test_too_large_is_refused(store_server, tmp_path):
    (store_server.root / "a.bin").write_bytes(os.urandom(2 << 20))
    with pytest.raises(TooLarge):
        fetch(f"{store_server.url}/a.bin", tmp_path / "a.bin", FAST)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 << 20))
    with pytest.raises(TooLarge):
        fetch(src.as_uri(), tmp_path / "copy.bin", FAST)


def test_file_store(tmp_path):
    src = tmp_path / "s" / "1.0"
    src.mkdir(parents=True)
    (src / "a.tar.gz").write_bytes(b"x" * 1000)
    dest = tmp_path / "out"
    assert fetch((src / "a.tar.gz").as_uri(), dest, FAST) == 1000
    with pytest.raises(NotFound):
        fetch((src / "missing.tar.gz").as_uri(), dest, FAST)
    assert sibling_url((src / "a.tar.gz").as_uri(), "SHA256SUMS") == (src / "SHA256SUMS").as_uri()


@pytest.mark.parametrize(("content", "header"), [
    ("ops:s3cret-pw", "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()),
    ("Bearer tok-s3cret", "Bearer tok-s3cret"),
])
def test_credentials_are_sent_and_never_logged(store_server, tmp_path, content, header):
    cred = tmp_path / "cred"
    cred.write_text(content + "\n")
    auth = load_credentials(cred)
    assert auth == header
    (store_server.root / "a.bin").write_bytes(b"data")
    store_server.require_auth = header
    with capture_logs() as logs, pytest.raises(FetchFailed, match="401") as err:
        fetch(f"{store_server.url}/a.bin", tmp_path / "x", FAST, authorization="Bearer wrong")
    assert "s3cret" not in str(err.value) and "wrong" not in str(err.value)
    store_server.truncate = 1
    with capture_logs() as logs:
        fetch(f"{store_server.url}/a.bin", tmp_path / "y", FAST, authorization=auth,
              sleep=lambda _s: None)
    assert "s3cret" not in repr(logs)
    assert (tmp_path / "y").read_bytes() == b"data"


def test_bad_credentials_file(tmp_path):
    cred = tmp_path / "cred"
    cred.write_text("no-colon-here")
    with pytest.raises(ValueError, match="user:password"):
        load_credentials(cred)


# ---- verify -------------------------------------------------------------------------------

def _sums_for(path: Path) -> bytes:
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n".encode()


def test_checksum_and_signature(tmp_path):
    pkg = tmp_path / "agent-1.0.tar.gz"
    pkg.write_bytes(b"package bytes")
    sums = _sums_for(pkg)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    sig = base64.b64encode(key.sign(sums))
    assert verify_package(pkg, pkg.name, sums, None, None)
    assert verify_package(pkg, pkg.name, sums, sig, pub)
    with pytest.raises(VerifyFailed, match="unsigned releases are refused"):
        verify_package(pkg, pkg.name, sums, None, pub)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(VerifyFailed, match="does not match"):
        verify_package(pkg, pkg.name, sums, base64.b64encode(other.sign(sums)), pub)
    with pytest.raises(VerifyFailed, match="not a base64"):
        verify_package(pkg, pkg.name, sums, b"garbage!!", pub)
    pkg.write_bytes(b"tampered bytes")
    with pytest.raises(VerifyFailed, match="checksum mismatch"):
        verify_package(pkg, pkg.name, sums, sig, pub)
    with pytest.raises(VerifyFailed, match="no entry"):
        verify_package(pkg, "hub-1.0.tar.gz", sums, None, None)


@pytest.mark.parametrize("bad", ["nonsense", "abc  file", "0" * 64 + "  a/b"])
def test_malformed_sums(bad):
    with pytest.raises(VerifyFailed):
        parse_sums(bad)


# ---- extract ------------------------------------------------------------------------------

def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
         version: str | None = "1.0") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        if version is not None:
            info = tarfile.TarInfo("VERSION")
            info.size = len(version) + 1
            tar.addfile(info, io.BytesIO(f"{version}\n".encode()))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x",
            link: str = "", size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if size is None and kind == tarfile.REGTYPE else (size or 0)
    return info, data if kind == tarfile.REGTYPE else None


def test_good_archive_is_extracted_whole(tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [_member("bin/run", data=b"#!/bin/sh\n"),
                                      _member("lib/link", tarfile.SYMTYPE, link="../bin/run")])
    out = extract_release(arc, tmp_path / "releases", "1.0", UpdateSource())
    assert (out / "bin" / "run").read_bytes() == b"#!/bin/sh\n"
    assert (out / "lib" / "link").is_symlink()
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["1.0"]


HOSTILE = {
    "absolute path": [_member("/etc/evil")],
    "dot-dot": [_member("../evil")],
    "dot-dot inside": [_member("a/../../evil")],
    "symlink leaving": [_member("esc", tarfile.SYMTYPE, link="../../outside")],
    "absolute symlink": [_member("esc", tarfile.SYMTYPE, link="/etc/passwd")],
    "hardlink leaving": [_member("hl", tarfile.LNKTYPE, link="../outside")],
    "char device": [_member("dev", tarfile.CHRTYPE)],
    "block device": [_member("blk", tarfile.BLKTYPE)],
    "fifo": [_member("fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, kind):
    arc = _tar(tmp_path / "a.tar.gz", HOSTILE[kind])
    with pytest.raises(UnsafePackage):
        extract_release(arc, tmp_path / "releases", "1.0", UpdateSource())
    assert list((tmp_path / "releases").iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_size_and_count_bombs_are_refused(tmp_path):
    arc = _tar(tmp_path / "big.tar.gz", [_member("zeros", data=b"\0" * 200_000)])
    with pytest.raises(UnsafePackage, match="more than 100000 bytes"):
        extract_release(arc, tmp_path / "r", "1.0", UpdateSource(extract_max_bytes=100_000))
    arc = _tar(tmp_path / "many.tar.gz", [_member(f"f{i}") for i in range(50)])
    with pytest.raises(UnsafePackage, match="more than 20 entries"):
        extract_release(arc, tmp_path / "r", "1.0", UpdateSource(extract_max_files=20))
    assert list((tmp_path / "r").iterdir()) == []


@pytest.mark.parametrize(("version", "match"), [(None, "no VERSION"), ("6.6.6", "says")])
def test_archive_must_name_its_version(tmp_path, version, match):
    arc = _tar(tmp_path / "a.tar.gz", [_member("x")], version=version)
    with pytest.raises(UnsafePackage, match=match):
        extract_release(arc, tmp_path / "r", "1.0", UpdateSource())


def test_not_a_tarball(tmp_path):
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(os.urandom(5000))
    with pytest.raises(UnsafePackage, match="not a valid"):
        extract_release(arc, tmp_path / "r", "1.0", UpdateSource())


def test_corrupt_gzip_stream(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [_member("f", data=b"abc" * 50_000)])
    data = bytearray(good.read_bytes())
    data[len(data) - 6] ^= 0xFF  # damage the gzip trailer (CRC/length): caught at the end
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsafePackage, match="not a valid"):
        extract_release(bad, tmp_path / "r", "1.0", UpdateSource())
    assert list((tmp_path / "r").iterdir()) == []


def test_unloadable_client_certificate_is_a_clear_failure(tmp_path):
    """package_client_cert/key that are not a certificate and its key: a clear failure
    before anything is sent, and nothing written."""
    from manager.updates import fetch as package_fetch

    bad = tmp_path / "client.pem"
    bad.write_text("not a certificate\n")
    policy = package_fetch.FetchPolicy(UpdateSource(
        package_client_cert=str(bad), package_client_key=str(bad), download_retries=0))
    dest = tmp_path / "pkg.tar.gz"
    with pytest.raises(package_fetch.FetchFailed, match="package_client_cert/package_client_key"):
        package_fetch.fetch("https://127.0.0.1:9/1.0/agent-1.0.tar.gz", dest, policy)
    assert not dest.exists()
