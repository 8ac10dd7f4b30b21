"""Updates end to end: real releases built with `aictl release build`, served by a real
HTTP store on 127.0.0.1 (and file://), applied by real `ai-manager` processes driven
through gRPC and the seeds' curl calls. Every fault case ends on the previous version,
running, with nothing half-done on disk."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import uuid

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import PY, ROOT
from tests.update_support import (
    Env,
    StoreServer,
    assert_on,
    install,
    started,
    steps,
    update,
    watch_op,
)

pytestmark = pytest.mark.slow


# ---- the happy path ---------------------------------------------------------------------

def test_update_succeeds_streams_every_step_and_replays(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    assert_on(env, m, "1.0.0")
    op = update(m, "1.1.0")
    assert len(op) == 32
    events = watch_op(m, op)
    assert steps(events) == [
        "validate:ok", "download:started", "download:ok", "verify:started", "verify:ok",
        "stage:started", "stage:ok", "stop:started", "stop:ok", "switch:started", "switch:ok",
        "start:started", "start:ok", "health:started", "health:ok", "commit:started",
        "commit:ok", "done:ok"]
    final = events[-1]
    assert final.final and final.outcome == "succeeded"
    assert final.from_version == "1.0.0" and final.to_version == "1.1.0"
    assert all(e.elapsed_seconds > 0 for e in events if e.status == "ok" and e.step != "validate")
    assert_on(env, m, "1.1.0")
    st = m.status()
    assert st.update.last_operation_id == op and st.update.last_outcome == "succeeded"
    assert st.update.last_version == "1.1.0" and st.update.running_operation_id == ""
    # A finished operation replays from its first event to its final one.
    assert steps(watch_op(m, op)) == steps(events)
    rels = {r.version: r for r in m.stub().ListReleases(pb.ListReleasesRequest()).releases}
    assert set(rels) == {"1.0.0", "1.1.0"}
    assert rels["1.1.0"].current and rels["1.0.0"].previous
    # Updating to the running version is a no-op success.
    resp = m.stub().Update(pb.UpdateRequest(version="1.1.0"), timeout=10)
    assert resp.operation_id == "" and "already" in resp.message
    # Version over the seeds' API follows the release.
    code, body = m.http("GET", "/version")
    assert code == 200 and json.loads(body)["version"] == "1.1.0"


def curl(m, method: str, path: str, data: str | None = None) -> tuple[int, dict]:
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method,
           f"http://127.0.0.1:{m.http_port}{path}"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", data]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    body, _, code = res.stdout.rpartition("\n")
    return int(code), json.loads(body)


def test_seed_curl_update_conflict_and_bad_versions(env):
    env.build("1.0.0")
    env.build("2.1.44")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=2.0)
    started(env, m)
    for bad in ["../x", "", "1" * 1000, "2.1.44\u00e9", "a/b"]:
        code, body = curl(m, "POST", "/update", json.dumps({"version": bad}))
        assert code == 400 and body["success"] is False and "version" in body["error"]
    code, body = curl(m, "POST", "/update", '{"version": "2.1.44"}')
    assert code == 200
    assert body["success"] is True
    assert body["message"] == "Update to version 2.1.44 started"
    op = body["operationId"]
    code, body = curl(m, "POST", "/update", '{"version": "2.1.44"}')
    assert code == 409 and body["success"] is False and op in body["error"]
    with pytest.raises(grpc.RpcError) as err:
        update(m, "2.1.44")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert op in err.value.details()
    assert m.status().update.running_operation_id == op
    assert watch_op(m, op)[-1].outcome == "succeeded"
    code, body = curl(m, "GET", "/version")
    assert body["version"] == "2.1.44"
    code, body = curl(m, "POST", "/update", '{"version": "2.1.44"}')
    assert code == 200 and body["success"] is True


def test_hub_manager_message_and_file_store(env):
    env.build("1.0.0")
    env.build("1.1.0")
    install(env.install_root, env.out / "1.0.0" / "hub-1.0.0.tar.gz", "1.0.0")
    url = (env.store_root / "{version}" / "hub-{version}.tar.gz").as_uri().replace(
        "%7Bversion%7D", "{version}")
    m = env.manager({"role": "hub"}, package_url=url, command=["bin/ai-hub"])
    started(env, m)
    code, body = curl(m, "POST", "/update", '{"version": "1.1.0"}')
    assert code == 200 and body["message"] == "Hub update to version 1.1.0 started"
    assert watch_op(m, body["operationId"])[-1].outcome == "succeeded"
    assert_on(env, m, "1.1.0")


def test_invalid_versions_change_nothing(env):
    env.build("1.0.0")
    env.install("1.0.0")
    m = env.manager()
    pid = started(env, m)
    for bad in ["../x", "", "1" * 1000, "\u0662.\u0661", "a b", "x/../y", ".."]:
        with pytest.raises(grpc.RpcError) as err:
            update(m, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        list(m.stub().WatchUpdate(pb.WatchUpdateRequest(operation_id="../nope"), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        list(m.stub().WatchUpdate(pb.WatchUpdateRequest(operation_id="0" * 32), timeout=5))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert m.status().pid == pid and m.status().update.last_operation_id == ""
    assert env.on_disk() == ["1.0.0"]


# ---- failures before anything is touched ------------------------------------------------

def expect_failed(env: Env, m, version: str, match: str) -> list[pb.UpdateEvent]:
    pid = m.status().pid
    events = watch_op(m, update(m, version))
    final = events[-1]
    assert final.outcome == "failed", steps(events)
    assert match in final.message, final.message
    assert "stop:started" not in steps(events)
    assert m.status().pid == pid
    assert m.status().update.last_outcome == "failed"
    assert_on(env, m, "1.0.0")
    assert env.on_disk() == ["1.0.0"]
    return events


def expect_refused(env: Env, m, version: str, code: grpc.StatusCode | tuple,
                   match: str, http_status: int | tuple = ()) -> str:
    """The update to `version` is refused at once (over gRPC and POST /update) and
    nothing changes: no operation, nothing journaled, the service untouched."""
    pid = m.status().pid
    last = m.status().update.last_operation_id
    codes = code if isinstance(code, tuple) else (code,)
    with pytest.raises(grpc.RpcError) as err:
        update(m, version)
    assert err.value.code() in codes, err.value.details()
    assert match in err.value.details() and "nothing was changed" in err.value.details()
    if http_status:
        status, body = curl(m, "POST", "/update", json.dumps({"version": version}))
        assert status in (http_status if isinstance(http_status, tuple) else (http_status,))
        assert body["success"] is False and match in body["error"]
    st = m.status()
    assert st.pid == pid and st.update.last_operation_id == last
    assert st.update.running_operation_id == ""
    assert_on(env, m, "1.0.0")
    assert env.on_disk() == ["1.0.0"]
    return err.value.details()


def test_version_missing_from_store_is_refused_with_the_url(env):
    """Item 3 of issue 11: a version the store does not have is a 404 naming the URL
    looked at (redacted), not a 200 "started"; nothing is journaled."""
    env.build("1.0.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    for head in (False, True):  # a ranged GET of one byte, then HEAD
        env.server.head = head
        details = expect_refused(env, m, "9.9.9", grpc.StatusCode.NOT_FOUND,
                                 f"{env.server.url}/9.9.9/agent-9.9.9.tar.gz", 404)
        assert "HTTP 404" in details
    methods = {r[0] for r in env.server.requests}
    assert methods == {"GET", "HEAD"}
    assert all(r[2].get("Range") == "bytes=0-0" for r in env.server.requests if r[0] == "GET")
    code, body = curl(m, "GET", "/update")
    assert code == 404 and "no update has run" in body["error"]
    # the package is there but its SHA256SUMS is not: refused too, naming SHA256SUMS
    env.build("1.1.0")
    (env.store_root / "1.1.0" / "SHA256SUMS").unlink()
    expect_refused(env, m, "1.1.0", grpc.StatusCode.NOT_FOUND, "1.1.0/SHA256SUMS", 404)


def file_store_url(env: Env) -> str:
    return (env.store_root / "{version}" / "agent-{version}.tar.gz").as_uri().replace(
        "%7Bversion%7D", "{version}")


def test_file_store_is_checked_before_an_update_is_accepted(env):
    """Item 3 of issue 11 with a file:// package_url: a version the store does not have
    is a 404 naming the path looked at; a release whose file is a directory, a FIFO, a
    symlink loop or (for a non-root manager) unreadable is refused as clearly; nothing
    is journaled, the service untouched. A good release from the same store updates."""
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(package_url=file_store_url(env))
    started(env, m)
    path = env.store_root / "9.9.9" / "agent-9.9.9.tar.gz"
    details = expect_refused(env, m, "9.9.9", grpc.StatusCode.NOT_FOUND, str(path), 404)
    assert "version 9.9.9 is not in the package store" in details
    assert f"file://{path} does not exist" in details
    code, body = curl(m, "GET", "/update")
    assert code == 404 and "no update has run" in body["error"]
    # the package there, its SHA256SUMS not: refused naming SHA256SUMS
    (env.store_root / "9.9.9").mkdir()
    shutil.copy(env.store_root / "1.1.0" / "agent-1.1.0.tar.gz", path)
    expect_refused(env, m, "9.9.9", grpc.StatusCode.NOT_FOUND,
                   str(env.store_root / "9.9.9" / "SHA256SUMS"), 404)
    # files that are there but cannot be a package
    for version, make, words in (
            ("2.0.0", lambda p: p.mkdir(), "is not a regular file"),
            ("2.0.1", os.mkfifo, "is not a regular file"),
            ("2.0.2", lambda p: p.symlink_to(p), "cannot be read"),
            ("2.0.3", lambda p: p.symlink_to(p.parent / "elsewhere"), "does not exist")):
        d = env.store_root / version
        d.mkdir()
        shutil.copy(env.store_root / "1.1.0" / "SHA256SUMS", d / "SHA256SUMS")
        target = d / f"agent-{version}.tar.gz"
        make(target)
        want = (grpc.StatusCode.NOT_FOUND if words == "does not exist"
                else grpc.StatusCode.FAILED_PRECONDITION)
        details = expect_refused(env, m, version, want, str(target),
                                 404 if words == "does not exist" else 409)
        assert words in details, (version, details)
    if os.geteuid() != 0:  # root reads any file: a mode cannot make it unreadable
        unreadable = env.store_root / "1.1.0" / "agent-1.1.0.tar.gz"
        unreadable.chmod(0)
        try:
            details = expect_refused(env, m, "1.1.0", grpc.StatusCode.FAILED_PRECONDITION,
                                     str(unreadable), 409)
            assert "permission denied" in details
        finally:
            unreadable.chmod(0o644)
    assert m.status().update.last_operation_id == ""
    events = watch_op(m, update(m, "1.1.0"))
    assert events[-1].outcome == "succeeded", steps(events)
    assert_on(env, m, "1.1.0")


PROBE_AS_NOBODY = """
import sys
from manager.updates.fetch import FetchPolicy, probe
try:
    probe(sys.argv[1], FetchPolicy(), authorization=None, timeout=5)
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    print("ok")
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the check as another user")
def test_an_unreadable_file_release_is_refused_by_the_check():
    """What a non-root manager's store check says of a package it may not read (as
    root the manager reads any file, so this runs the manager's check as nobody)."""
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="store-", dir="/tmp"))
    try:
        d.chmod(0o755)
        pkg = d / "agent-1.1.0.tar.gz"
        pkg.write_bytes(b"x")
        url = pkg.as_uri()

        def check() -> str:
            res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                  "--clear-groups", PY, "-c", PROBE_AS_NOBODY, url],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            return res.stdout.strip()

        assert check() == "ok"
        pkg.chmod(0)
        assert check() == f"FetchFailed {url}: permission denied"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_release_lost_between_the_check_and_the_download(env):
    """The store has it when asked, then not: the download fails and nothing changes."""
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    env.server.download_fault = 404
    expect_failed(env, m, "1.1.0", "404")


def test_unreachable_store(env):
    env.build("1.0.0")
    env.install("1.0.0")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        m = env.manager(package_url=f"http://127.0.0.1:{s.getsockname()[1]}/{{version}}/a.tgz")
        started(env, m)
        expect_refused(env, m, "1.1.0", grpc.StatusCode.UNAVAILABLE, "unreachable", 503)
    finally:
        s.close()


def test_store_that_goes_away_after_the_check(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    env.server.download_fault = "drop"
    expect_failed(env, m, "1.1.0", "after 2 attempts")


def test_store_check_is_bounded_in_time(env):
    """A store that accepts the connection but never answers: the check gives up after
    download_timeout (here 1 s) and answers 503; nothing changes."""
    import time

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(download_timeout=1.0)
    started(env, m)
    env.server.hang = 5.0
    t0 = time.monotonic()
    expect_refused(env, m, "1.1.0", grpc.StatusCode.UNAVAILABLE, "1.1.0")
    assert time.monotonic() - t0 < 4.0
    env.server.hang = 0.0


def test_truncated_download(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    env.server.truncate = 1000
    expect_failed(env, m, "1.1.0", "truncated")


def test_a_store_that_trickles_hits_the_download_deadline(env):
    """Every read arrives within download_timeout, but the whole package would take
    ~5 s: download_deadline = 1 s fails the update, and nothing changes."""
    env.build("1.0.0")
    env.build("1.1.0", blob_bytes=4 << 20)
    env.install("1.0.0")
    m = env.manager(download_deadline=1.0)
    started(env, m)
    env.server.throttle = 0.08  # per 64 KiB: ~0.8 MB/s
    events = expect_failed(env, m, "1.1.0", "took longer than 1s (download_deadline)")
    assert "verify:started" not in steps(events)


def test_checksum_mismatch(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    pkg = env.store_root / "1.1.0" / "agent-1.1.0.tar.gz"
    pkg.write_bytes(pkg.read_bytes() + b"tampered")
    m = env.manager()
    started(env, m)
    expect_failed(env, m, "1.1.0", "checksum mismatch")


def test_signatures(env):
    keys = env.tmp / "keys"
    keys.mkdir()
    for name in ("release", "other"):
        res = subprocess.run([PY, "-m", "aictl.main", "release", "keygen", "--out",
                              str(keys / name)], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert (keys / "release.key").stat().st_mode & 0o777 == 0o600
    env.build("1.0.0")
    env.build("1.1.0", key=keys / "release.key")
    env.build("1.2.0")                                  # unsigned
    env.build("1.3.0", key=keys / "other.key")          # signed by someone else
    env.install("1.0.0")
    m = env.manager(package_public_key=str(keys / "release.pub"))
    started(env, m)
    expect_failed(env, m, "1.2.0", "unsigned releases are refused")
    expect_failed(env, m, "1.3.0", "does not match")
    sig = env.store_root / "1.1.0" / "SHA256SUMS.sig"
    good = sig.read_bytes()
    sig.write_bytes(b"not a signature")
    expect_failed(env, m, "1.1.0", "SHA256SUMS.sig")
    sig.write_bytes(good)
    assert watch_op(m, update(m, "1.1.0"))[-1].outcome == "succeeded"
    assert_on(env, m, "1.1.0")


def _publish_raw(env: Env, version: str, data: bytes) -> None:
    import hashlib

    d = env.store_root / version
    d.mkdir(parents=True, exist_ok=True)
    (d / f"agent-{version}.tar.gz").write_bytes(data)
    (d / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  agent-{version}.tar.gz\n")


def _hostile(version: str, info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        v = tarfile.TarInfo("VERSION")
        v.size = len(version) + 1
        tar.addfile(v, io.BytesIO(f"{version}\n".encode()))
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname = kind, link
    return i


def test_hostile_tarballs_never_install(env):
    """Each hostile kind through a real manager (the extractor's own tests cover more)."""
    env.build("1.0.0")
    env.install("1.0.0")
    m = env.manager(extract_max_bytes=1 << 20)
    started(env, m)
    cases = {
        "2.0.1": (_info("../evil"), "'..'"),
        "2.0.2": (_info("/tmp/evil-" + uuid.uuid4().hex), "absolute"),
        "2.0.3": (_info("ln", tarfile.SYMTYPE, "../../../etc"), "leaves"),
        "2.0.4": (_info("dev", tarfile.CHRTYPE), "device"),
        "2.0.5": (_info("big"), "more than"),
    }
    for version, (info, match) in cases.items():
        data = b"\0" * (2 << 20) if info.name == "big" else b"x"
        _publish_raw(env, version, _hostile(version, info, data))
        events = expect_failed(env, m, version, match)
        assert "stage:failed" in steps(events)
    assert not (env.install_root / "evil").exists()


def test_full_disk(env, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {res.stderr.strip()}")
    try:
        env.install_root = small / "ai-agent"
        env.build("1.0.0")
        env.build("1.1.0", blob_bytes=3 << 20)  # incompressible: does not fit in 2 MB
        env.install("1.0.0")
        m = env.manager()
        started(env, m)
        expect_failed(env, m, "1.1.0", "No space left on device")
        # Small to download, too big once unpacked: the disk fills up during stage.
        _publish_raw(env, "1.2.0", _hostile("1.2.0", _info("zeros"), b"\0" * (3 << 20)))
        events = expect_failed(env, m, "1.2.0", "No space left on device")
        assert "stage:failed" in steps(events)
        m.stop()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# ---- failures after the switch roll back --------------------------------------------------

@pytest.mark.parametrize(("behavior", "match"), [
    ({"crash": True}, "failed to start"),
    ({"unhealthy": True}, "not healthy within"),
    ({"report_version": "6.6.6"}, "reports version '6.6.6'"),
])
def test_bad_release_rolls_back(env, behavior, match):
    env.build("1.0.0")
    env.build("1.1.0", behavior=behavior)
    env.install("1.0.0")
    # "crash" exits as soon as Python has started, which under load alone can outlast the
    # usual start_secs of 0.3 s; the manager then rightly calls the release started and
    # the health step fails instead. The window the crash must fall in is start_secs.
    over = {"start_secs": 3.0} if behavior.get("crash") else {}
    m = env.manager(healthy_deadline=3.0, **over)
    started(env, m)
    events = watch_op(m, update(m, "1.1.0"))
    final = events[-1]
    assert final.outcome == "rolled_back", steps(events)
    assert match in final.message and "rolled back to version 1.0.0" in final.message
    assert [s for s in steps(events) if s.startswith("rollback_")] == [
        "rollback_stop:started", "rollback_stop:ok", "rollback_switch:started",
        "rollback_switch:ok", "rollback_start:started", "rollback_start:ok",
        "rollback_health:started", "rollback_health:ok"]
    assert_on(env, m, "1.0.0")
    st = m.status()
    assert st.update.last_outcome == "rolled_back" and st.update.last_version == "1.1.0"
    rels = {r.version: r for r in m.stub().ListReleases(pb.ListReleasesRequest()).releases}
    assert rels["1.0.0"].current


def test_manual_rollback_and_pruning(env):
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        env.build(v)
    env.install("1.0.0")
    m = env.manager(keep_releases=2)
    started(env, m)
    with pytest.raises(grpc.RpcError) as err:
        m.stub().Rollback(pb.RollbackRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        assert watch_op(m, update(m, v))[-1].outcome == "succeeded"
    assert env.on_disk() == ["1.2.0", "1.3.0"]
    resp = m.stub().Rollback(pb.RollbackRequest(), timeout=10)
    assert resp.version == "1.2.0"
    events = watch_op(m, resp.operation_id)
    assert events[-1].outcome == "succeeded"
    assert "download:started" not in steps(events)
    assert_on(env, m, "1.2.0")
    rels = {r.version: r for r in m.stub().ListReleases(pb.ListReleasesRequest()).releases}
    assert rels["1.2.0"].current and rels["1.3.0"].previous


def test_store_credentials_from_a_file_are_used_and_never_logged(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    cred = env.tmp / "store.cred"
    cred.write_text("fleet:Sup3rS3cret\n")
    cred.chmod(0o600)
    import base64

    env.server.require_auth = "Basic " + base64.b64encode(b"fleet:Sup3rS3cret").decode()
    m = env.manager(package_credentials_file=str(cred))
    started(env, m)
    assert watch_op(m, update(m, "1.1.0"))[-1].outcome == "succeeded"
    assert all(r[2].get("Authorization") == env.server.require_auth
               for r in env.server.requests)  # the store check sends them too
    cred.write_text("fleet:wrong-pass\n")
    with pytest.raises(grpc.RpcError) as err:  # refused by the store check: no operation
        update(m, "1.0.0")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "401" in err.value.details() and "nothing was changed" in err.value.details()
    assert m.status().update.running_operation_id == ""
    assert "Sup3rS3cret" not in m.logs() and "wrong-pass" not in m.logs()
    assert "wrong-pass" not in err.value.details()
    # the store lets the check through but refuses the download: the operation fails
    cred.write_text("fleet:Sup3rS3cret\n")
    env.server.download_fault = 401
    final = watch_op(m, update(m, "1.0.0"))[-1]
    assert final.outcome == "failed" and "401" in final.message
    assert "Sup3rS3cret" not in m.logs() and "Sup3rS3cret" not in final.message


def test_https_store_with_its_own_ca(env):
    """A store behind TLS with a private CA: trusted through package_ca_file, refused
    (clearly, without retries) when the CA is not configured."""
    from tests.update_support import self_signed_tls

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    tls, ca = self_signed_tls(env.tmp)
    with StoreServer(env.store_root, tls=tls) as https:
        m = env.manager(package_url=https.package_url)
        fails_then_succeeds_with(env, m, "TLS certificate is not trusted",
                                 grpc.StatusCode.FAILED_PRECONDITION, package_ca_file=str(ca))


def fails_then_succeeds_with(env: Env, m, match: str, code: grpc.StatusCode | tuple,
                             **keys: str) -> None:
    """The update to 1.1.0 is refused by the store check with `match`; with `keys` added
    to the service's config (manager restarted), it succeeds."""
    started(env, m)
    expect_refused(env, m, "1.1.0", code, match)
    m.stop()
    m.services[0].update(keys)
    m.start()
    started(env, m)
    assert watch_op(m, update(m, "1.1.0"))[-1].outcome == "succeeded"
    assert_on(env, m, "1.1.0")


def test_https_store_that_wants_a_client_certificate(env, tmp_path_factory):
    """A store behind mutual TLS (openssl-made CA, server and client certificates): the
    update fails clearly without package_client_cert, and succeeds with it."""
    from tests.fixtures.hub_procs import make_certs, mutual_tls_server_context

    certs = make_certs(tmp_path_factory.mktemp("store-certs"))
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    with StoreServer(env.store_root, tls=mutual_tls_server_context(certs)) as https:
        m = env.manager(package_url=https.package_url, package_ca_file=str(certs / "ca.pem"))
        # the store wants a certificate: it hangs up (TLS 1.3) or says so, either way
        # the message points at package_client_cert
        fails_then_succeeds_with(env, m, "package_client_cert",
                                 (grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.UNAVAILABLE),
                                 package_client_cert=str(certs / "client.pem"),
                                 package_client_key=str(certs / "client.key"))
