"""`aictl release build / keygen / publish` as the operator runs them."""

from __future__ import annotations

import base64
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from manager.updates.verify import load_public_key, parse_sums, sha256_file, verify_package
from tests.conftest import PY, ROOT
from tests.update_support import StoreServer, make_source


def aictl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "aictl.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_build_this_repo(tmp_path):
    res = aictl("release", "build", "2.1.44", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    d = tmp_path / "2.1.44"
    assert sorted(p.name for p in d.iterdir()) == [
        "SHA256SUMS", "agent-2.1.44.tar.gz", "hub-2.1.44.tar.gz"]
    sums = parse_sums((d / "SHA256SUMS").read_text())
    for comp in ("hub", "agent"):
        name = f"{comp}-2.1.44.tar.gz"
        assert sums[name] == sha256_file(d / name)
        with tarfile.open(d / name) as tar:
            names = tar.getnames()
            assert tar.extractfile("VERSION").read() == b"2.1.44\n"  # type: ignore[union-attr]
            launcher = tar.getmember(f"bin/ai-{comp}")
            assert launcher.mode & 0o111
            assert all(m.uid == 0 and m.mtime == tar.getmember("VERSION").mtime
                       for m in tar.getmembers())
        assert f"{comp}/__init__.py" in names and "backendai/errors.py" in names
        assert "backendai/v1/manager_pb2.py" in names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert not any(n.startswith(("/", "./", "..")) for n in names)
        other = "agent" if comp == "hub" else "hub"
        assert not any(n.startswith(f"{other}/") for n in names)


def test_build_is_reproducible(tmp_path):
    for out in ("a", "b"):
        assert aictl("release", "build", "1.0.0", "--out", str(tmp_path / out)).returncode == 0
    assert (tmp_path / "a/1.0.0/SHA256SUMS").read_bytes() == \
        (tmp_path / "b/1.0.0/SHA256SUMS").read_bytes()


def test_launcher_runs_the_release_from_anywhere(tmp_path):
    src = make_source(tmp_path)
    (src / "agent" / "main.py").write_text(
        "import sys, agent, backendai\nprint('ran', agent.__file__, sys.argv[1:])\n")
    assert aictl("release", "build", "3.0.0", "--out", str(tmp_path / "out"),
                 "--source", str(src)).returncode == 0
    rel = tmp_path / "rel"
    rel.mkdir()
    with tarfile.open(tmp_path / "out/3.0.0/agent-3.0.0.tar.gz") as tar:
        tar.extractall(rel, filter="data")
    (tmp_path / "current").symlink_to(rel)
    res = subprocess.run([str(tmp_path / "current/bin/ai-agent"), "--config", "x"],
                         capture_output=True, text=True, cwd="/", timeout=30,
                         env={"PATH": "/usr/bin:/bin", "AI_PYTHON": PY})
    assert res.returncode == 0, res.stderr
    assert f"ran {rel.resolve()}/agent/__init__.py ['--config', 'x']" in res.stdout


def test_vendor_copies_the_pinned_dependencies(tmp_path):
    src = make_source(tmp_path)
    (src / "requirements.lock").write_text("h11==0.16.0  # a pinned dependency\n")
    res = aictl("release", "build", "1.0.0", "--out", str(tmp_path / "out"), "--source",
                str(src), "--vendor")
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "out/1.0.0/agent-1.0.0.tar.gz") as tar:
        names = tar.getnames()
    assert "vendor/h11/__init__.py" in names
    (src / "requirements.lock").write_text("no-such-package-xyz==1.0\n")
    res = aictl("release", "build", "1.0.1", "--out", str(tmp_path / "out"), "--source",
                str(src), "--vendor")
    assert res.returncode == 1 and "no-such-package-xyz is not installed" in res.stderr


def test_keygen_and_signed_build(tmp_path):
    res = aictl("release", "keygen", "--out", str(tmp_path / "k"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    again = aictl("release", "keygen", "--out", str(tmp_path / "k"))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    src = make_source(tmp_path)
    res = aictl("release", "build", "1.0.0", "--out", str(tmp_path / "out"), "--source",
                str(src), "--key", str(tmp_path / "k.key"))
    assert res.returncode == 0, res.stderr
    d = tmp_path / "out" / "1.0.0"
    sums, sig = (d / "SHA256SUMS").read_bytes(), (d / "SHA256SUMS.sig").read_bytes()
    pub = load_public_key(tmp_path / "k.pub")
    Ed25519PublicKey.from_public_bytes(pub).verify(base64.b64decode(sig), sums)
    verify_package(d / "agent-1.0.0.tar.gz", "agent-1.0.0.tar.gz", sums, sig, pub)


@pytest.mark.parametrize("bad", ["../x", "", "a/b", "1" * 1000, "\u00e9"])
def test_build_refuses_bad_versions(tmp_path, bad):
    res = aictl("release", "build", bad, "--out", str(tmp_path))
    assert res.returncode == 1 and "version" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_publish_to_a_directory_and_to_http(tmp_path):
    src = make_source(tmp_path)
    out = tmp_path / "out"
    assert aictl("release", "build", "1.0.0", "--out", str(out), "--source",
                 str(src)).returncode == 0
    store = tmp_path / "store"
    res = aictl("release", "publish", "1.0.0", "--out", str(out), "--to", store.as_uri())
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (store / "1.0.0").iterdir()) == sorted(
        p.name for p in (out / "1.0.0").iterdir())
    web = tmp_path / "web"
    web.mkdir()
    server = StoreServer(web)
    try:
        cred = tmp_path / "cred"
        cred.write_text("Bearer pub-s3cret\n")
        server.require_auth = "Bearer pub-s3cret"
        res = aictl("release", "publish", "1.0.0", "--out", str(out), "--to",
                    f"{server.url}/api/raw", "--credentials", str(cred))
        assert res.returncode == 0, res.stderr
        assert "s3cret" not in res.stdout + res.stderr
        for name in ("agent-1.0.0.tar.gz", "hub-1.0.0.tar.gz", "SHA256SUMS"):
            published = web / "api/raw/1.0.0" / name
            assert published.read_bytes() == (out / "1.0.0" / name).read_bytes()
        assert [p for m, p, _h in server.requests if m == "PUT"][-1].endswith("/SHA256SUMS")
        cred.write_text("Bearer wrong\n")
        res = aictl("release", "publish", "1.0.0", "--out", str(out), "--to",
                    f"{server.url}/api/raw", "--credentials", str(cred))
        assert res.returncode == 1 and "HTTP 401" in res.stderr and "wrong" not in res.stderr
    finally:
        server.close()
    res = aictl("release", "publish", "9.9.9", "--out", str(out), "--to", store.as_uri())
    assert res.returncode == 1 and "does not exist" in res.stderr


@pytest.mark.slow
def test_vendored_release_runs_the_real_agent_with_a_bare_host_python(tmp_path):
    """`--vendor` makes a self-contained release: the real agent starts (here: --help)
    from an empty environment with the host's plain python3, which has none of our
    dependencies installed."""
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import grpc"], capture_output=True, check=False) \
        if Path(bare).exists() else None
    if probe is None or probe.returncode == 0:
        pytest.skip("needs a /usr/bin/python3 without grpc to prove self-containment")
    res = aictl("release", "build", "7.0.0", "--out", str(tmp_path / "out"), "--vendor")
    assert res.returncode == 0, res.stderr
    rel = tmp_path / "rel"
    rel.mkdir()
    with tarfile.open(tmp_path / "out/7.0.0/agent-7.0.0.tar.gz") as tar:
        tar.extractall(rel, filter="data")
    assert (rel / "vendor" / "typing_extensions.py").exists()  # a transitive dependency
    run = subprocess.run([str(rel / "bin" / "ai-agent"), "--help"], capture_output=True,
                         text=True, cwd="/", timeout=60,
                         env={"PATH": "/usr/bin:/bin", "AI_PYTHON": bare})
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout
