"""Bad input to the new keys and flags: `[store]`, `[ha]`, the agent's and the managers'
hub address lists, aictl's `--hub` list. Each is refused with an error naming the key,
and a password given where it does not belong never appears in the error. Also the
pure parts: which hub a client tries next, and the schema decision."""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from backendai.errors import ConfigError, FailedPrecondition
from backendai.hub_endpoints import next_address, not_leader
from hub import config as hub_config
from hub.migrations import Component, Migration, pending
from tests.conftest import PY, ROOT
from tests.fixtures.hub_procs import make_certs

SECRET = "s3cr3t-pa55"


def load_hub(tmp_path, extra: str):
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    + extra)
    return hub_config.load(path)


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "db.password"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def test_defaults_are_one_hub_on_sqlite(tmp_path):
    cfg = load_hub(tmp_path, "")
    assert cfg.store.backend == "sqlite" and cfg.store.migrate and cfg.ha.lease_ttl == 10.0


def test_a_postgresql_store_with_tls_keys(tmp_path, password_file, pg_certs):
    certs = pg_certs
    cfg = load_hub(tmp_path, f'''
[store]
backend = "postgresql"
dsn = "postgresql://hub@db1.example:6432/fleet"
password_file = "{password_file}"
sslmode = "verify-full"
sslrootcert = "{certs / 'ca.pem'}"
sslcert = "{certs / 'client.pem'}"
sslkey = "{certs / 'client.key'}"
pool_size = 4
[ha]
lease_ttl = 5
hub_id = "hub-1"
advertise_address = "hub-1.example:3000"
''')
    kwargs = cfg.store.connect_kwargs()
    assert kwargs["password"] == SECRET and kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == str(certs / "ca.pem")
    assert (kwargs["sslcert"], kwargs["sslkey"]) == (str(certs / "client.pem"),
                                                     str(certs / "client.key"))
    assert cfg.ha.hub_id == "hub-1" and cfg.ha.lease_ttl == 5.0
    from hub.store_config import describe_dsn

    assert describe_dsn(cfg.store.dsn) == "db1.example:6432/fleet"
    # the primary and its standby, whichever accepts writes (docs/DEPLOY.md)
    cfg = load_hub(tmp_path, '[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db-1:5432,'
                             'db-2:5432/hub?target_session_attrs=read-write&sslmode=verify-full"\n')
    assert describe_dsn(cfg.store.dsn) == "db-1,db-2:5432,5432/hub"


@pytest.mark.parametrize(("table", "error"), [
    ('[store]\nbackend = "mysql"', "store.backend: must be one of sqlite, postgresql"),
    ('[store]\nbackend = "postgresql"', "store.dsn: required with backend"),
    ('[store]\nbackend = "postgresql"\ndsn = "   "', "store.dsn: required"),
    ('[store]\ndsn = "postgresql://hub@db/hub"', "store.dsn: only for backend"),
    ('[store]\nbackend = "postgresql"\ndsn = "host=db port=5432 =x"',
     "store.dsn: not a PostgreSQL connection string"),
    ('[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub?bogus_option=1"',
     "store.dsn: not a PostgreSQL connection string"),
    ('[store]\nbackend = "postgresql"\ndsn = "' + "x" * 3000 + '"', "store.dsn: too long"),
    ('[store]\nbackend = "postgresql"\ndsn = "host=db\\u0000"',
     "store.dsn: too long or contains NUL"),
    ('[store]\nbackend = "postgresql"\ndsn = 5', "store.dsn: must be a string"),
    ('[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub"\nsslmode = "yes"',
     "store.sslmode: must be one of"),
    ('[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub?sslmode=require"\n'
     'sslmode = "verify-full"', "store.sslmode: also set in store.dsn"),
    ('[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub"\nsslrootcert = "ca.pem"',
     "store.sslrootcert: must be an absolute path"),
    ('[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub"\npassword_file = '
     '"/nonexistent/pw"', "store.password_file: cannot read"),
    ('[store]\npool_size = 1', "store.pool_size: must be between 2 and 200"),
    ('[store]\npool_size = 100000', "store.pool_size: must be between 2 and 200"),
    ('[store]\ntimeout = 0', "store.timeout: must be between 0.5 and 300"),
    ('[store]\nmigrate = "yes"', "store.migrate: must be true or false"),
    ('[store]\nbogus = 1', "store.bogus: unknown key"),
    ("store = 5", "store: must be a table"),
    ('[ha]\nlease_ttl = 0', "ha.lease_ttl: must be between 1 and 300"),
    ('[ha]\nlease_ttl = 1e9', "ha.lease_ttl: must be between 1 and 300"),
    ('[ha]\nlease_ttl = nan', "ha.lease_ttl: must be between 1 and 300"),
    ('[ha]\nlease_ttl = true', "ha.lease_ttl: must be a number"),
    ('[ha]\nhub_id = "../etc"', "ha.hub_id: expected 1-64 of"),
    ('[ha]\nhub_id = "' + "h" * 65 + '"', "ha.hub_id: expected 1-64 of"),
    ('[ha]\nadvertise_address = "no-port"', "ha.advertise_address: expected \"HOST:PORT\""),
    ('[ha]\nleader = true', "ha.leader: unknown key"),
])
def test_bad_store_and_ha_keys_name_the_key(tmp_path, table, error):
    with pytest.raises(ConfigError) as caught:
        load_hub(tmp_path, table + "\n")
    assert error in str(caught.value)


@pytest.fixture(scope="module")
def pg_certs(tmp_path_factory):
    d = make_certs(tmp_path_factory.mktemp("pg-certs"))
    (d / "open.key").write_bytes((d / "client.key").read_bytes())
    (d / "open.key").chmod(0o640)  # group-readable, and this user's: libpq refuses it
    (d / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n"
                                "-----END CERTIFICATE-----\n")
    return d


PG = '[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub{dsn}"\n'


@pytest.mark.parametrize(("dsn", "keys", "error"), [
    ("", {"sslrootcert": "{d}/missing.pem"}, "store.sslrootcert: cannot read"),
    ("", {"sslrootcert": "{d}/junk.pem"}, "store.sslrootcert: '{d}/junk.pem' holds no valid"),
    ("", {"sslrootcert": "{d}/client.key"}, "store.sslrootcert: '{d}/client.key' holds no"),
    ("?sslrootcert={d}/missing.pem", {}, "store.dsn's sslrootcert: cannot read"),
    ("", {"sslcert": "{d}/client.pem"}, "store.sslkey: required with store.sslcert"),
    ("", {"sslkey": "{d}/client.key"}, "store.sslcert: required with store.sslkey"),
    ("?sslkey={d}/client.key", {}, "store.sslcert: required with store.dsn's sslkey"),
    ("", {"sslcert": "{d}/client.pem", "sslkey": "{d}/missing.key"},
     "store.sslkey: cannot read"),
    ("", {"sslcert": "{d}/client.pem", "sslkey": "{d}/open.key"},
     "store.sslkey: '{d}/open.key' has group or world access"),
    ("", {"sslcert": "{d}/client.pem", "sslkey": "{d}/server.key"},
     "store.sslkey: '{d}/server.key' is not the private key of the certificate"),
    ("", {"sslcert": "{d}/junk.pem", "sslkey": "{d}/client.key"},
     "store.sslcert: '{d}/junk.pem' holds no valid certificate"),
])
def test_bad_database_tls_files_are_refused_when_the_config_is_read(
        tmp_path, pg_certs, dsn, keys, error):
    """libpq would fail every connection with these (and the start would retry for
    ever): refused at load, so by the start, --check-config and a reload alike."""
    table = PG.format(dsn=dsn.format(d=pg_certs)) + "".join(
        f'{k} = "{v.format(d=pg_certs)}"\n' for k, v in keys.items())
    with pytest.raises(ConfigError) as caught:
        load_hub(tmp_path, table)
    assert error.format(d=pg_certs) in str(caught.value)


def test_good_database_tls_files_and_the_system_store_are_taken(tmp_path, pg_certs):
    cfg = load_hub(tmp_path, PG.format(dsn="?sslmode=verify-full&sslrootcert=system"))
    assert cfg.store.dsn.endswith("sslrootcert=system")
    cfg = load_hub(tmp_path, PG.format(dsn=f"?sslcert={pg_certs}/client.pem&sslkey="
                                           f"{pg_certs}/client.key&sslrootcert={pg_certs}/ca.pem"))
    assert cfg.store.backend == "postgresql"


@pytest.mark.parametrize("dsn", [
    f"postgresql://hub:{SECRET}@db.example:5432/hub",
    f"host=db.example user=hub password={SECRET} dbname=hub",
    f"postgresql://hub@db.example/hub?password={SECRET}",
])
def test_a_password_in_the_dsn_is_refused_without_showing_it(tmp_path, dsn):
    with pytest.raises(ConfigError) as caught:
        load_hub(tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    assert "store.dsn: must not hold the password" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("content", "mode", "error"), [
    ("", 0o600, "must hold the password on its first line"),
    ("\nsecond-line", 0o600, "must hold the password on its first line"),
    ("pw\n", 0o644, "must not be readable or writable by others"),
    ("x" * 5000, 0o600, "larger than 1024 bytes"),
    (b"\xff\xfe".decode("latin-1"), 0o600, "not UTF-8"),
])
def test_bad_password_files_are_refused(tmp_path, content, mode, error):
    path = tmp_path / "pw"
    path.write_bytes(content.encode("latin-1"))
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_hub(tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "postgresql://hub@db/hub"\n'
                           f'password_file = "{path}"\n')
    assert "store.password_file" in str(caught.value) and error in str(caught.value)


@pytest.mark.parametrize(("value", "error"), [
    ("[]", "must be \"HOST:PORT\" or a non-empty list"),
    ('["a:1", "a:1"]', "lists an address twice"),
    ('["a:1", 5]', "hub_address: expected \"HOST:PORT\""),
    ('["a"]', "hub_address: expected \"HOST:PORT\""),
    ("[" + ", ".join(f'"h{i}:1"' for i in range(17)) + "]", "at most 16 addresses"),
    ("{}", "must be \"HOST:PORT\" or a non-empty list"),
])
def test_agent_hub_address_lists(tmp_path, value, error):
    from agent import config as agent_config

    path = tmp_path / "agent.toml"
    path.write_text(f'name = "a1"\ngrpc_listen = "127.0.0.1:0"\nmanager_address = "m:1"\n'
                    f"hub_address = {value}\n")
    with pytest.raises(ConfigError) as caught:
        agent_config.load(path)
    assert "hub_address" in str(caught.value) and error in str(caught.value)
    path.write_text('name = "a1"\ngrpc_listen = "127.0.0.1:0"\nmanager_address = "m:1"\n'
                    'hub_address = ["h1:3000", "h2:3000"]\n')
    assert agent_config.load(path).hub_address == ("h1:3000", "h2:3000")


@pytest.mark.parametrize(("hub", "error"), [
    ({"address": "h1:1", "addresses": ["h2:1"]}, "hub.addresses: set address or addresses"),
    ({}, "hub.address: required"),
    ({"addresses": []}, "hub.addresses: must be"),
    ({"addresses": ["h1:1", "h1:1"]}, "lists an address twice"),
])
def test_manager_hub_addresses(tmp_path, hub, error):
    from manager import config as manager_config

    base = {"state_dir": str(tmp_path), "services": [{"name": "svc", "command": ["true"]}]}
    with pytest.raises(ConfigError) as caught:
        manager_config.parse({**base, "hub": hub})
    assert error in str(caught.value)
    link = manager_config.parse({**base, "hub": {"addresses": ["h1:1", "h2:1"]}}).hub
    assert link is not None and link.hubs == ("h1:1", "h2:1")
    link = manager_config.parse({**base, "hub": {"address": "h1:1"}}).hub
    assert link is not None and link.hubs == ("h1:1",)


@pytest.mark.parametrize(("hubs", "error"), [
    ("a:1,,b:1", "--hub wants HOST:PORT"),
    ("a:1,a:1", "lists a hub twice"),
    ("nope", "--hub: expected \"HOST:PORT\""),
    (",".join(f"h{i}:1" for i in range(17)), "at most 16 hubs"),
    ("", "--hub wants HOST:PORT"),
])
def test_aictl_bad_hub_lists_exit_2(hubs, error):
    env = {**os.environ, "AICTL_HUB": hubs}
    res = subprocess.run([PY, "-m", "aictl.main", "rollout", "list"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and error in res.stderr, res.stderr


def test_aictl_with_no_hub_up_names_them_all():
    res = subprocess.run([PY, "-m", "aictl.main", "agents", "--hub", "127.0.0.1:1,127.0.0.1:2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 3
    assert "hubs 127.0.0.1:1,127.0.0.1:2 unavailable" in res.stderr, res.stderr


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, trailers=()):
        self._code, self._trailers = code, trailers

    def code(self):
        return self._code

    def trailing_metadata(self):
        return self._trailers


def test_which_hub_a_client_tries_next():
    hubs = ("a:1", "b:1", "c:1")
    down = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    assert next_address(hubs, "a:1", down) == "b:1"
    assert next_address(hubs, "c:1", down) == "a:1"
    assert next_address(hubs, "b:1", TimeoutError()) == "c:1"
    follower = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION,
                            (("backendai-leader", "c:1"),))
    assert not_leader(follower) == "c:1" and next_address(hubs, "a:1", follower) == "c:1"
    # a leader outside the list is not followed (the client's token goes where it was told)
    stranger = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION,
                            (("backendai-leader", "evil:1"),))
    assert next_address(hubs, "a:1", stranger) == "b:1"
    nobody = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, (("backendai-leader", ""),))
    assert not_leader(nobody) == "" and next_address(hubs, "a:1", nobody) == "b:1"
    # a real answer (a refused change, a bad request) stays with the hub that gave it
    for code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.NOT_FOUND):
        assert next_address(hubs, "a:1", FakeRpcError(code)) == "a:1"
    assert next_address(("a:1",), "a:1", down) == "a:1"


def test_the_schema_decision():
    comp = Component("hub", (Migration(1, "one", ""), Migration(2, "two", "")))
    assert [m.version for m in pending(comp, 0, migrate=True, where="db")] == [1, 2]
    assert [m.version for m in pending(comp, 1, migrate=True, where="db")] == [2]
    assert pending(comp, 2, migrate=False, where="db") == ()
    with pytest.raises(FailedPrecondition, match=r"version 1; this hub needs version 2: run "
                       r"`ai-hub --config FILE --migrate` \(applies 2 \(two\)\)"):
        pending(comp, 1, migrate=False, where="db")
    with pytest.raises(FailedPrecondition, match="version 3, newer than this hub knows"):
        pending(comp, 3, migrate=True, where="db")
    with pytest.raises(ValueError, match="numbered"):
        Component("bad", (Migration(2, "x", ""),))


def test_a_sqlite_hub_does_not_load_psycopg(tmp_path):
    code = ("import sys; from pathlib import Path; import hub.daemon, hub.main; "
            "from hub import config; from hub.store import open_store; import asyncio; "
            f"cfg = config.load(Path({str(tmp_path / 'hub.toml')!r})); "
            "s = asyncio.run(open_store(cfg)); asyncio.run(s.close()); "
            "print('psycopg' in sys.modules)")
    (tmp_path / "hub.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n'
                                       'grpc_listen = "127.0.0.1:0"\n')
    res = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
