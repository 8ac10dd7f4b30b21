"""deploy/install.sh into a scratch root (--prefix): the seeds' layout, configs that the
manager accepts, the token with mode 600, units enabled (offline, `systemctl --root`),
idempotent (a second run changes nothing), --uninstall, and bad input that changes nothing.

The manager venv is created for real from a wheel of this repository, offline
(--no-index --no-deps). Not covered: installing its third-party dependencies (that needs
PyPI or a wheelhouse) and building from the source directory (needs a build backend the
fresh venv lacks offline). Starting the installed units against a real systemd is covered
in test_systemd_backend.py (--systemd-user).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import PY, ROOT

INSTALL = ROOT / "deploy" / "install.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def make_release(base: Path, role: str, version: str = "1.0.0") -> Path:
    src = base / f"src-{role}-{version}"
    (src / "bin").mkdir(parents=True)
    (src / "VERSION").write_text(version + "\n")
    exe = src / "bin" / f"ai-{role}"
    exe.write_text("#!/bin/sh\nexec sleep 600\n")
    exe.chmod(0o755)
    tarball = base / f"{role}-{version}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return tarball


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root with its type, mode, mtime and content (or link target)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p.relative_to(root))] = ("dir", st.st_mode, st.st_mtime_ns)
            else:
                out[str(p.relative_to(root))] = (
                    "file", st.st_mode, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def check_config(path: Path, module: str = "manager.main") -> subprocess.CompletedProcess[str]:
    """`ai-manager` / `ai-agent` / `ai-hub` --check-config on a written config."""
    return subprocess.run([PY, "-m", module, "--config", str(path), "--check-config"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def test_agent_install_is_idempotent_and_uninstalls(tmp_path: Path) -> None:
    root = tmp_path / "root"
    release = make_release(tmp_path, "agent")
    args = ("--prefix", str(root), "--release", str(release), "--no-venv", "agent")
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "changed:" in first.stdout

    opt = root / "opt" / "ai-agent"
    assert os.readlink(opt / "current") == "releases/1.0.0"
    assert (opt / "current" / "VERSION").read_text().strip() == "1.0.0"
    assert (opt / "manager").is_dir()
    etc = root / "etc" / "backend-ai"
    token = etc / "manager.token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text().strip()) == 64
    assert etc.stat().st_mode & 0o777 == 0o750
    for d in ("agent", "agent-manager"):
        assert (root / "var" / "lib" / "backend-ai" / d).is_dir()
    cfg = etc / "agent-manager.toml"
    res = check_config(cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    res = check_config(etc / "agent.toml", "agent.main")
    assert res.returncode == 0, res.stdout + res.stderr
    text = cfg.read_text()
    assert f'install_root = "{opt}"' in text and 'backend = "systemd"' in text
    assert f'auth_token_file = "{token}"' in text
    # the HTTP JSON API stays on loopback unless --http-listen asks (issue 11, item 10)
    assert 'http_listen = "127.0.0.1:3081"' in text and "0.0.0.0:3081" not in text
    assert "note: the manager's HTTP API" not in first.stdout

    units = root / "etc" / "systemd" / "system"
    for name in ("ai-agent", "ai-agent-manager"):
        unit = (units / f"{name}.service").read_text()
        for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "PrivateTmp=yes", "ProtectHome=yes", "WantedBy=multi-user.target"):
            assert line in unit, (name, line)
        assert "@" not in unit.replace("@backend-ai", "")  # every placeholder filled
        assert (units / "multi-user.target.wants" / f"{name}.service").is_symlink()
    assert f"ReadWritePaths=-{root}/var/lib/backend-ai/agent\n" in (
        units / "ai-agent.service").read_text()
    assert f"ReadWritePaths=-{opt} -{root}/var/lib/backend-ai/agent-manager\n" in (
        units / "ai-agent-manager.service").read_text()
    if shutil.which("systemd-analyze"):
        venv_bin = opt / "manager" / "venv" / "bin"  # the unit's ExecStart must exist
        venv_bin.mkdir(parents=True)
        (venv_bin / "ai-manager").symlink_to(Path(PY).parent / "ai-manager")
        res = subprocess.run(["systemd-analyze", "verify", "ai-agent.service",
                              "ai-agent-manager.service"], cwd=units, capture_output=True,
                             text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        shutil.rmtree(opt / "manager" / "venv")

    before = snapshot(root)
    second = run(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "unchanged"
    assert snapshot(root) == before

    gone = run("--prefix", str(root), "--uninstall", "agent")
    assert gone.returncode == 0, gone.stderr
    assert files_under(root) == []
    assert run("--prefix", str(root), "--uninstall", "agent").stdout.strip() == "unchanged"


def test_hub_install_and_given_token(tmp_path: Path) -> None:
    root = tmp_path / "root"
    given = tmp_path / "fleet.token"
    given.write_text("f" * 64 + "\n")
    args = ("--prefix", str(root), "--release", str(make_release(tmp_path, "hub")),
            "--no-venv", "--token-file", str(given), "hub")
    assert run(*args).returncode == 0
    opt = root / "opt" / "backend-ai" / "hub"
    assert os.readlink(opt / "current") == "releases/1.0.0"
    etc = root / "etc" / "backend-ai"
    assert (etc / "manager.token").read_text() == given.read_text()
    for name in ("manager.token", "hub.token"):
        assert (etc / name).stat().st_mode & 0o777 == 0o600
    assert (etc / "hub.token").read_text() != given.read_text()
    res = check_config(etc / "hub-manager.toml")
    assert res.returncode == 0, res.stdout + res.stderr
    res = check_config(etc / "hub.toml", "hub.main")
    assert res.returncode == 0, res.stdout + res.stderr
    assert '127.0.0.1:3081' in (etc / "hub-manager.toml").read_text()
    units = root / "etc" / "systemd" / "system"
    assert {p.name for p in units.glob("*.service")} == {"ai-hub.service",
                                                          "ai-hub-manager.service"}
    assert f"ReadWritePaths=-{root}/var/lib/backend-ai/hub\n" in (
        units / "ai-hub.service").read_text()
    if shutil.which("systemd-analyze"):
        venv_bin = opt / "manager" / "venv" / "bin"
        venv_bin.mkdir(parents=True)
        (venv_bin / "ai-manager").symlink_to(Path(PY).parent / "ai-manager")
        res = subprocess.run(["systemd-analyze", "verify", "ai-hub.service",
                              "ai-hub-manager.service"], cwd=units, capture_output=True,
                             text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        shutil.rmtree(opt / "manager" / "venv")
    assert run(*args).stdout.strip() == "unchanged"
    assert run("--prefix", str(root), "--uninstall", "hub").returncode == 0
    assert files_under(root) == []


def test_rcd_install(tmp_path: Path) -> None:
    root = tmp_path / "root"
    args = ("--prefix", str(root), "--rcd", "--release", str(make_release(tmp_path, "agent")),
            "--no-venv", "agent")
    assert run(*args).returncode == 0
    rcd = root / "etc" / "rc.d"
    script = (rcd / "rc.ai-agent").read_text()
    assert f"AI_ROOT=${{AI_ROOT:-{root}/opt/ai-agent}}" in script
    assert f"AI_LOG=${{AI_LOG:-{root}/var/log/ai-agent.log}}" in script
    assert os.access(rcd / "rc.ai-agent-manager", os.X_OK)
    go = (root / "boot" / "config" / "go").read_text().splitlines()
    assert f"{rcd}/rc.ai-agent-manager start" in go and f"{rcd}/rc.ai-agent start" in go
    cfg = root / "etc" / "backend-ai" / "agent-manager.toml"
    assert 'backend = "rcd"' in cfg.read_text()
    assert check_config(cfg).returncode == 0
    # the installed script works with its rewritten defaults
    res = subprocess.run([str(rcd / "rc.ai-agent"), "status"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert (res.returncode, res.stdout.strip()) == (3, "ai-agent is not running")
    assert run(*args).stdout.strip() == "unchanged"
    assert run("--prefix", str(root), "--rcd", "--uninstall", "agent").returncode == 0
    assert files_under(root) == ["boot/config/go"]
    assert (root / "boot" / "config" / "go").read_text() == "#!/bin/bash\n"


@pytest.mark.parametrize("role", ["agent", "hub"])
def test_http_listen_opens_the_api_to_the_network_and_says_what_that_means(
        tmp_path: Path, role: str) -> None:
    root = tmp_path / "root"
    args = ("--prefix", str(root), "--release", str(make_release(tmp_path, role)),
            "--no-venv", "--http-listen", "0.0.0.0:3081", role)
    first = run(*args)
    assert first.returncode == 0, first.stderr
    cfg = root / "etc" / "backend-ai" / f"{role}-manager.toml"
    assert 'http_listen = "0.0.0.0:3081"' in cfg.read_text()
    res = check_config(cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    note = [ln for ln in first.stdout.splitlines() if ln.startswith("note: the manager's HTTP")]
    assert len(note) == 1
    for words in ("0.0.0.0:3081", "manager.token", "plain HTTP", "http_tls = true",
                  "docs/SECURITY.md"):
        assert words in note[0], words
    # a second run changes nothing and says it again
    again = run(*args)
    assert again.returncode == 0 and "changed:" not in again.stdout
    assert again.stdout.splitlines() == [note[0], "unchanged"]
    # configs are never overwritten: another address is a note, not a change
    other = run(*args[:-3], "--http-listen", "10.0.0.7:3081", role)
    assert other.returncode == 0 and "changed:" not in other.stdout
    assert f"{cfg} exists and keeps http_listen = \"0.0.0.0:3081\"" in other.stdout
    # with http_tls the note has nothing left to warn about
    cfg.write_text("http_tls = true\n" + cfg.read_text())
    assert "note: the manager's HTTP" not in run(*args).stdout


def test_http_listen_on_loopback_says_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run("--prefix", str(root), "--no-venv", "--http-listen", "127.0.0.1:9081", "agent")
    assert res.returncode == 0, res.stderr
    cfg = root / "etc" / "backend-ai" / "agent-manager.toml"
    assert 'http_listen = "127.0.0.1:9081"' in cfg.read_text()
    assert "note:" not in res.stdout and check_config(cfg).returncode == 0


@pytest.mark.parametrize("address", ["", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:70000", "nas:3081",
                                     "1.2.3.4:80;rm -rf /", "[zz]:1", "1.2.3.4:80\n",
                                     "1.2.3.4: 80", "$(id):1", "1.2.3.4:" + "9" * 40])
def test_bad_http_listen_changes_nothing(tmp_path: Path, address: str) -> None:
    root = tmp_path / "root"
    res = run("--prefix", str(root), "--no-venv", "--http-listen", address, "agent")
    assert res.returncode == 2, (address, res.stdout, res.stderr)
    assert res.stderr.startswith("install.sh: --http-listen"), res.stderr
    assert not root.exists()
    res = run("--prefix", str(root), "--no-venv", "agent", "--http-listen")
    assert res.returncode == 2 and "--http-listen needs HOST:PORT" in res.stderr
    assert not root.exists()


@pytest.mark.parametrize("problem", ["garbage", "bad-version", "no-binary", "missing",
                                     "relative-prefix", "no-role", "two-roles", "rcd-hub",
                                     "unknown-flag", "bad-restart-sec", "empty-token"])
def test_bad_input_changes_nothing(tmp_path: Path, problem: str) -> None:
    root = tmp_path / "root"
    good = make_release(tmp_path, "agent")
    release = str(good)
    extra: list[str] = []
    role = ["agent"]
    prefix = str(root)
    if problem == "garbage":
        (tmp_path / "g.tar.gz").write_bytes(b"not a tarball")
        release = str(tmp_path / "g.tar.gz")
    elif problem == "bad-version":
        bad = tmp_path / "bad"
        (bad / "bin").mkdir(parents=True)
        (bad / "VERSION").write_text("../../etc\n")
        (bad / "bin" / "ai-agent").write_text("#!/bin/sh\n")
        (bad / "bin" / "ai-agent").chmod(0o755)
        release = str(bad)
    elif problem == "no-binary":
        bad = tmp_path / "nobin"
        bad.mkdir()
        (bad / "VERSION").write_text("1.0.0\n")
        release = str(bad)
    elif problem == "missing":
        release = str(tmp_path / "nope.tar.gz")
    elif problem == "relative-prefix":
        prefix = "relative/root"
    elif problem == "no-role":
        role = []
    elif problem == "two-roles":
        role = ["agent", "hub"]
    elif problem == "rcd-hub":
        extra, role = ["--rcd"], ["hub"]
    elif problem == "unknown-flag":
        extra = ["--frobnicate"]
    elif problem == "bad-restart-sec":
        extra = ["--restart-sec", "1; rm -rf /"]
    elif problem == "empty-token":
        (tmp_path / "empty").write_text("")
        extra = ["--token-file", str(tmp_path / "empty")]
    res = run("--prefix", prefix, "--release", release, "--no-venv", *extra, *role)
    assert res.returncode == 2, (problem, res.stdout, res.stderr)
    assert res.stderr.startswith("install.sh: "), res.stderr
    assert not root.exists()
    assert not (ROOT / "relative").exists()


def build_wheel(out: Path) -> Path:
    """A wheel of this repository's manager (backendai + manager packages and the
    ai-manager entry point), zipped here: no `wheel`/build backend is needed offline."""
    import base64
    import zipfile

    name = "backendai_control-0.1.0"
    files: dict[str, bytes] = {}
    for pkg in ("backendai", "manager"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            files[str(path.relative_to(ROOT))] = path.read_bytes()
    info = f"{name}.dist-info"
    files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: backendai-control\nVersion: 0.1.0\n"
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nai-manager = manager.main:main\n"
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = out / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
    return wheel


def test_manager_venv_from_a_wheel(tmp_path: Path) -> None:
    """The venv step for real, offline: `python3 -m venv`, then pip installs the manager
    from a wheel (--no-index --no-deps: the third-party packages would come from PyPI or
    a wheelhouse); a second run leaves the venv alone."""
    root = tmp_path / "root"
    wheel = build_wheel(tmp_path)
    args = ("--prefix", str(root), "--manager-source", str(wheel), "--pip-args",
            "--no-index --no-deps", "agent")
    first = run(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    venv = root / "opt" / "ai-agent" / "manager" / "venv"
    assert f"changed: {venv} (manager from {wheel})" in first.stdout
    assert os.access(venv / "bin" / "ai-manager", os.X_OK)
    assert "manager.main" in (venv / "bin" / "ai-manager").read_text()
    assert list(venv.glob("lib/python3*/site-packages/manager/supervision/systemd_unit.py"))
    before = snapshot(root)
    assert run(*args).stdout.strip() == "unchanged"
    assert snapshot(root) == before
    bad = run("--prefix", str(tmp_path / "other"), "--manager-source", str(tmp_path), "agent")
    assert bad.returncode == 2 and "no pyproject.toml" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_a_newer_release_is_staged_but_current_stays(tmp_path: Path) -> None:
    """Installing over an installed host adds the release; switching is the manager's job
    (an update with health check and rollback), so current does not move."""
    root = tmp_path / "root"
    base = ("--prefix", str(root), "--no-venv", "agent")
    assert run("--release", str(make_release(tmp_path, "agent", "1.0.0")), *base).returncode == 0
    res = run("--release", str(make_release(tmp_path, "agent", "1.1.0")), *base)
    assert res.returncode == 0, res.stderr
    opt = root / "opt" / "ai-agent"
    assert f"changed: {opt}/releases/1.1.0" in res.stdout
    assert "note: current stays releases/1.0.0; update through the manager" in res.stdout
    assert os.readlink(opt / "current") == "releases/1.0.0"
    assert sorted(p.name for p in (opt / "releases").iterdir()) == ["1.0.0", "1.1.0"]
