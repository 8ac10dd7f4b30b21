"""`--check-config` checks what start checks (issue 11, item 8), for the three daemons:
for each refusal a daemon gives when it really starts, `--check-config` gives the same
message and a non-zero exit; and an "ok" config starts. Real processes, real files."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from backendai.auth import write_token
from tests.conftest import PY, ROOT, assert_eventually
from tests.fixtures.hub_procs import make_certs

MODULES = {"manager": "manager.main", "agent": "agent.main", "hub": "hub.main"}
PROGS = {"manager": "ai-manager", "agent": "ai-agent", "hub": "ai-hub"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = make_certs(tmp_path_factory.mktemp("certs"))
    (d / "open.key").write_bytes((d / "server.key").read_bytes())
    (d / "open.key").chmod(0o644)
    (d / "not-a-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n"
                                    "-----END CERTIFICATE-----\n")
    return d


def base(daemon: str, tmp: Path) -> dict[str, Any]:
    if daemon == "manager":
        return {"state_dir": str(tmp / "state"), "http_listen": "127.0.0.1:0",
                "grpc_listen": "127.0.0.1:0", "log_format": "json",
                "services": [{"name": "svc", "command": ["/bin/sleep", "600"],
                              "autostart": False}]}
    if daemon == "agent":
        return {"name": "edge-1", "grpc_listen": "127.0.0.1:0", "log_format": "json"}
    return {"state_dir": str(tmp / "state"), "grpc_listen": "127.0.0.1:0",
            "log_format": "json"}


def message(daemon: str, stderr: str) -> str:
    """The one line a daemon prints when it refuses, without its prefix."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith(PROGS[daemon] + ": ")]
    assert lines, stderr
    text = lines[-1].removeprefix(PROGS[daemon] + ": ")
    return text.removeprefix("config error: ")


def run(daemon: str, config: Path, *args: str,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The daemon's command line (after `prefix`: another user's, see `unprivileged`)."""
    return subprocess.run([*prefix, PY, "-m", MODULES[daemon], "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def write(tmp: Path, daemon: str, table: dict[str, Any]) -> Path:
    path = tmp / f"{daemon}.toml"
    path.write_text(tomli_w.dumps(table))
    return path


def refusal(tmp: Path, daemon: str, table: dict[str, Any],
            prefix: tuple[str, ...] = ()) -> str:
    """Run --check-config, then the daemon for real: both refuse, with the same words."""
    config = write(tmp, daemon, table)
    checked = run(daemon, config, "--check-config", prefix=prefix)
    assert checked.returncode != 0, checked.stdout
    started = run(daemon, config, "--ready-file", str(tmp / "ready.json"), prefix=prefix)
    assert started.returncode != 0, "the daemon started although --check-config refused"
    assert not (tmp / "ready.json").exists()
    assert message(daemon, checked.stderr) == message(daemon, started.stderr)
    return message(daemon, checked.stderr)


def token(path: Path, mode: int = 0o600, text: str = "t0ken") -> str:
    write_token(path, text)
    path.chmod(mode)
    return str(path)


Keys = Any  # Callable[[Path, Path], dict[str, Any]]: (tmp, certs) -> keys over the base


def _server_tls(certs: Path, **over: str) -> dict[str, str]:
    return {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key"),
            **over}


def _a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("x")
    return tmp / "a-file"


CASES: dict[str, tuple[str, Keys, str]] = {}
"""name -> (daemon, keys over the base config, what the message names)."""
for _d in ("manager", "agent", "hub"):
    CASES.update({
        f"{_d}-token-missing": (_d, lambda t, c: {"auth_token_file": str(t / "nope")},
                                "auth_token_file: cannot read"),
        f"{_d}-token-open": (_d, lambda t, c: {"auth_token_file": token(t / "o.token", 0o644)},
                             "must not be writable or readable by others"),
        f"{_d}-token-empty": (_d, lambda t, c: {"auth_token_file": token(t / "e.token",
                                                                         text="")},
                              "one token of printable ASCII"),
        f"{_d}-token-relative": (_d, lambda t, c: {"auth_token_file": "manager.token"},
                                 "auth_token_file: must be an absolute path"),
        f"{_d}-tls-mismatch": (_d, lambda t, c: {"tls": _server_tls(
            c, key_file=str(c / "client.key"))}, "tls.key_file: "),
        f"{_d}-tls-open-key": (_d, lambda t, c: {"tls": _server_tls(
            c, key_file=str(c / "open.key"))}, "tls.key_file: "),
        f"{_d}-tls-key-as-cert": (_d, lambda t, c: {"tls": _server_tls(
            c, cert_file=str(c / "server.key"))}, "tls.cert_file: "),
        f"{_d}-tls-bad-ca": (_d, lambda t, c: {"tls": _server_tls(
            c, client_ca_file=str(c / "not-a-ca.pem"))},
            "tls.client_ca_file: holds no valid certificate"),
        f"{_d}-tls-relative": (_d, lambda t, c: {"tls": _server_tls(c, cert_file="s.pem")},
                               "tls.cert_file: must be an absolute"),
        f"{_d}-port": (_d, lambda t, c: {"grpc_listen": "127.0.0.1:70000"},
                       "port must be 0-65535"),
    })
for _d in ("manager", "hub"):
    CASES[f"{_d}-state-under-a-file"] = (
        _d, lambda t, c: {"state_dir": str(_a_file(t) / "state")}, "is not a directory")
CASES.update({
    "manager-hub-token": ("manager", lambda t, c: {"hub": {
        "address": "127.0.0.1:9", "name": "edge-1",
        "token_file": token(t / "hub-open.token", 0o644)}}, "hub.token_file: "),
    "manager-http-port": ("manager", lambda t, c: {"http_listen": "localhost:x"},
                          "http_listen"),
    "manager-named-token-open": ("manager", lambda t, c: {"auth_tokens": [{
        "name": "dash", "role": "read", "file": token(t / "dash.token", 0o604)}]},
        "auth_tokens[0].file: "),
    "manager-named-token-same-value": ("manager", lambda t, c: {
        "auth_token_file": token(t / "a.token", text="same"),
        "auth_tokens": [{"name": "dash", "file": token(t / "b.token", text="same")}]},
        "every named token must differ"),
    "agent-hub-token": ("agent", lambda t, c: {
        "hub_address": "127.0.0.1:9", "manager_address": "127.0.0.1:3082",
        "hub_token_file": str(t / "missing.token")}, "hub_token_file: cannot read"),
    "hub-manager-token": ("hub", lambda t, c: {"manager_token_file": token(
        t / "mgr-open.token", 0o666)}, "manager_token_file: "),
    "hub-manager-tls-mismatch": ("hub", lambda t, c: {"manager_tls": {
        "ca_file": str(c / "ca.pem"), "cert_file": str(c / "client.pem"),
        "key_file": str(c / "server.key")}}, "manager_tls.key_file: "),
})




def _pg(t: Path, c: Path, **over: Any) -> dict[str, Any]:
    """A hub on PostgreSQL (no server: every case is refused before any connection)."""
    pw = t / "db.password"
    if not pw.exists():
        pw.write_text("pw\n")
        pw.chmod(0o600)
    return {"store": {"backend": "postgresql", "dsn": "postgresql://hub@127.0.0.1:9/hub",
                      "password_file": str(pw), **over}}


def _hub_db(t: Path, versions: dict[str, int], **top: Any) -> dict[str, Any]:
    """A hub.db in the state directory with these schema versions recorded."""
    (t / "state").mkdir(exist_ok=True)
    db = sqlite3.connect(t / "state" / "hub.db")
    db.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, "
               "version INTEGER NOT NULL)")
    db.executemany("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)", versions.items())
    db.commit()
    db.close()
    return dict(top)


def _garbage_db(t: Path) -> dict[str, Any]:
    (t / "state").mkdir(exist_ok=True)
    (t / "state" / "hub.db").write_bytes(b"not a database" * 100)
    return {}


def _hub_id(t: Path, text: str) -> dict[str, Any]:
    (t / "state").mkdir(exist_ok=True)
    (t / "state" / "hub_id").write_text(text)
    return {}


def _webhook(t: Path, **over: str) -> dict[str, Any]:
    return {"event_sinks": [{"type": "webhook", "url": "https://hooks.example:8443/x",
                             **over}]}


CASES.update({
    # [[auth_tokens]] on the hub: files, modes, names, values
    "hub-named-token-open": ("hub", lambda t, c: {"auth_tokens": [{
        "name": "dash", "role": "read", "file": token(t / "dash.token", 0o604)}]},
        "auth_tokens[0].file: "),
    "hub-named-token-missing": ("hub", lambda t, c: {"auth_tokens": [{
        "name": "dash", "file": str(t / "nope.token")}]}, "auth_tokens[0].file: cannot read"),
    "hub-named-token-same-value": ("hub", lambda t, c: {
        "auth_token_file": token(t / "a.token", text="same"),
        "auth_tokens": [{"name": "dash", "file": token(t / "b.token", text="same")}]},
        "every named token must differ"),
    "hub-named-token-same-name": ("hub", lambda t, c: {
        "auth_token_file": token(t / "a.token", text="one"),
        "auth_tokens": [{"name": "default", "file": token(t / "b.token", text="two")}]},
        "duplicate token name 'default'"),
    # [store] for PostgreSQL: the password file, the DSN, the TLS files
    "hub-pg-password-open": ("hub", lambda t, c: _pg(t, c, password_file=token(
        t / "open.password", 0o644, "pw")), "store.password_file: "),
    "hub-pg-password-missing": ("hub", lambda t, c: _pg(t, c, password_file=str(
        t / "none.password")), "store.password_file: cannot read"),
    "hub-pg-dsn-password": ("hub", lambda t, c: _pg(
        t, c, dsn="postgresql://hub:hunter2@127.0.0.1:9/hub"),
        "store.dsn: must not hold the password"),
    "hub-pg-dsn-garbage": ("hub", lambda t, c: _pg(t, c, dsn="host=db =x"),
                           "store.dsn: not a PostgreSQL connection string"),
    "hub-pg-rootcert-missing": ("hub", lambda t, c: _pg(
        t, c, sslmode="verify-full", sslrootcert=str(t / "no-ca.pem")),
        "store.sslrootcert: cannot read"),
    "hub-pg-rootcert-not-a-ca": ("hub", lambda t, c: _pg(
        t, c, sslrootcert=str(c / "not-a-ca.pem")), "store.sslrootcert: "),
    "hub-pg-key-open": ("hub", lambda t, c: _pg(
        t, c, sslcert=str(c / "client.pem"), sslkey=str(c / "open.key")),
        "store.sslkey: "),
    "hub-pg-cert-without-key": ("hub", lambda t, c: _pg(t, c, sslcert=str(c / "client.pem")),
                                "store.sslkey: required with store.sslcert"),
    "hub-pg-dsn-key-mismatch": ("hub", lambda t, c: _pg(
        t, c, dsn=f"postgresql://hub@127.0.0.1:9/hub?sslcert={c / 'client.pem'}"
                  f"&sslkey={c / 'server.key'}"), "is not the private key of the certificate"),
    # the state directory's hub_id and database
    "hub-id-bad": ("hub", lambda t, c: _hub_id(t, "../../etc/passwd"),
                   "remove the file or set [ha] hub_id"),
    "hub-db-newer": ("hub", lambda t, c: _hub_db(t, {"hub": 99}),
                     "schema 'hub' version 99, newer than this hub knows"),
    "hub-db-newer-events": ("hub", lambda t, c: _hub_db(t, {"hub": 2, "events": 42}),
                            "schema 'events' version 42, newer than this hub knows"),
    "hub-db-migrate-off": ("hub", lambda t, c: _hub_db(t, {"hub": 1}, store={"migrate": False}),
                           "run `ai-hub --config FILE --migrate`"),
    "hub-db-not-a-database": ("hub", lambda t, c: _garbage_db(t), "state_dir: cannot read"),
    # event sinks' files, as the start builds the sinks
    "hub-sink-secret-missing": ("hub", lambda t, c: _webhook(
        t, secret_file=str(t / "no.secret")), "event_sinks.webhook.secret_file: cannot read"),
    "hub-sink-credentials-missing": ("hub", lambda t, c: _webhook(
        t, credentials_file=str(t / "no.cred")), "event_sinks.webhook.credentials_file: "),
    "hub-sink-ca-not-a-ca": ("hub", lambda t, c: _webhook(t, ca_file=str(c / "not-a-ca.pem")),
                             "event_sinks.webhook"),
    "manager-sink-secret-open": ("manager", lambda t, c: _webhook(
        t, secret_file=token(t / "hook.secret", 0o644)), "event_sinks.webhook.secret_file: "),
    "manager-sink-credentials-missing": ("manager", lambda t, c: _webhook(
        t, credentials_file=str(t / "no.cred")), "event_sinks.webhook.credentials_file: "),
    # the agent: its two token files (it has no [[auth_tokens]] and no state)
    "agent-hub-token-open": ("agent", lambda t, c: {
        "hub_address": "127.0.0.1:9", "manager_address": "127.0.0.1:3082",
        "hub_token_file": token(t / "hub-open.token", 0o644)}, "hub_token_file: "),
    "agent-named-tokens-unknown": ("agent", lambda t, c: {"auth_tokens": [{
        "name": "dash", "file": token(t / "dash.token")}]}, "auth_tokens: unknown key"),
})


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_config_refuses_what_start_refuses_in_the_same_words(tmp_path, certs, name):
    daemon, keys, needle = CASES[name]
    table = {**base(daemon, tmp_path), **keys(tmp_path, certs)}
    text = refusal(tmp_path, daemon, table)
    assert needle in text, text
    assert "Traceback" not in text


@pytest.mark.parametrize(("component", "updates"), [("services", False),
                                                    ("events", False),
                                                    ("update_journal", True)])
def test_state_dir_written_by_a_newer_manager(tmp_path, component, updates):
    """A database a newer manager wrote (the journal is opened only by a manager that
    updates, so only then is its version a refusal); a component this build does not
    know is no reason to refuse."""
    table = base("manager", tmp_path)
    if updates:
        table["services"][0]["install_root"] = str(tmp_path / "opt")
    config = write(tmp_path, "manager", table)
    assert run("manager", config, "--check-config").returncode == 0
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "manager.db")
    db.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version "
               "INTEGER NOT NULL)")
    db.executemany("INSERT INTO schema_versions VALUES (?, ?)", [(component, 99),
                                                                 ("a_future_part", 7)])
    db.commit()
    db.close()
    text = refusal(tmp_path, "manager", table)
    assert f"'{component}' tables of schema version 99" in text


NOBODY = 65534


@pytest.fixture
def unprivileged() -> Iterator[tuple[Path, Path, tuple[str, ...]]]:
    """(work, locked, prefix): a directory for the test's files that the daemons' user can
    read, one that user cannot write in, and the command prefix that runs a daemon as
    that user. As root (CI runs as root, and root may write anywhere) the daemon runs as
    `nobody` through setpriv, without groups, and both directories are one under /tmp
    that root owns (pytest's own tmp_path is root's alone); as anyone else, the daemon
    runs as that user and `locked` is made read-only."""
    root = os.geteuid() == 0
    home = Path(tempfile.mkdtemp(prefix="check-config-", dir="/tmp" if root else None))
    try:
        if not root:
            locked = home / "locked"
            locked.mkdir()
            locked.chmod(0o500)
            try:
                yield home, locked, ()
            finally:
                locked.chmod(0o700)
            return
        home.chmod(0o755)  # nobody may enter and read, not write
        prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
        # nobody can run the daemons from this checkout, and really is unprivileged
        probe = subprocess.run(
            [*prefix, PY, "-c", "import os, manager.main, hub.main; print(os.geteuid())"],
            capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
        assert probe.stdout.strip() == str(NOBODY), probe.stderr
        yield home, home, prefix
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_state_dir_not_writable(unprivileged):
    """A state_dir the daemon's user cannot create: --check-config and the start refuse
    it in the same words, whoever runs the tests (as root, the daemons run as nobody)."""
    work, locked, prefix = unprivileged
    uid = NOBODY if prefix else os.getuid()
    for daemon in ("manager", "hub"):
        table = {**base(daemon, work), "state_dir": str(locked / "state" / daemon)}
        text = refusal(work, daemon, table, prefix)
        assert "is not writable by this user" in text and f"(uid {uid})" in text, text
        assert not (locked / "state").exists()
    # as the test's own user the same config passes: the refusal was the permission
    if prefix:
        for daemon in ("manager", "hub"):
            checked = run(daemon, work / f"{daemon}.toml", "--check-config")
            assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("daemon", ["manager", "agent", "hub"])
def test_ok_means_the_daemon_starts(tmp_path, certs, daemon):
    table = {**base(daemon, tmp_path), "auth_token_file": token(tmp_path / "ok.token"),
             "tls": {"cert_file": str(certs / "server.pem"),
                     "key_file": str(certs / "server.key"),
                     "client_ca_file": str(certs / "ca.pem")}}
    config = write(tmp_path, daemon, table)
    checked = run(daemon, config, "--check-config")
    assert checked.returncode == 0 and ": ok (" in checked.stdout, checked.stderr
    ready = tmp_path / "ready.json"
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PY, "-m", MODULES[daemon], "--config", str(config),
                                 "--ready-file", str(ready)], cwd=ROOT,
                                stdout=out, stderr=out)
    try:
        assert_eventually(lambda: ready.exists() or proc.poll() is not None, 30)
        assert ready.exists(), log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    # --check-config beside the running daemon's state changes nothing and still says ok
    assert run(daemon, config, "--check-config").returncode == 0


def test_check_config_never_connects_to_the_database(tmp_path, certs):
    """A hub on PostgreSQL: --check-config checks the [store] files and the DSN, says ok,
    and never connects (the server's reachability is the start's to find out)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    try:
        port = server.getsockname()[1]
        table = {**base("hub", tmp_path), **_pg(tmp_path, certs, sslmode="verify-full",
                                                 sslrootcert=str(certs / "ca.pem"))}
        table["store"]["dsn"] = f"postgresql://hub@127.0.0.1:{port}/hub"
        checked = run("hub", write(tmp_path, "hub", table), "--check-config")
        assert checked.returncode == 0 and ": ok (" in checked.stdout, checked.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # nobody came
    finally:
        server.close()
