"""Config validation: every wrong key, type or value fails with a message naming the key."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backendai.errors import ConfigError
from manager import config

ROOT = Path(__file__).resolve().parent.parent


def doc(**over):
    svc = {"name": "ai-agent", "command": ["python3", "worker.py"]}
    svc.update(over.pop("svc", {}))
    base = {"role": "agent", "state_dir": "/var/lib/x", "services": [svc]}
    base.update(over)
    return base


def test_minimal_config_and_defaults():
    cfg = config.parse(doc())
    assert cfg.role == "agent" and str(cfg.http_listen) == "127.0.0.1:3081"
    assert str(cfg.grpc_listen) == "127.0.0.1:3082"
    svc = cfg.primary
    assert svc.package == "ai-agent" and svc.backend == "process"
    assert svc.policy.stop_signal == signal.SIGTERM and svc.policy.restart == "always"
    assert svc.unit == "ai-agent.service" and svc.rc_script == "/etc/rc.d/rc.ai-agent"


def test_design_example_parses(tmp_path):
    text = '''
role = "agent"
http_listen = "127.0.0.1:3081"
grpc_listen = "127.0.0.1:3082"
state_dir = "/var/lib/backend-ai/agent-manager"

[[services]]
name = "ai-agent"
package = "@backend-ai/agent"
backend = "process"
command = ["python3", "-u", "worker.py"]
working_directory = "/srv/worker"
stop_signal = "INT"
'''
    path = tmp_path / "m.toml"
    path.write_text(text)
    cfg = config.load(path)
    assert cfg.primary.package == "@backend-ai/agent"
    assert cfg.primary.policy.stop_signal == signal.SIGINT


@pytest.mark.parametrize(("over", "key"), [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"svc": {"bogus": 1}}, "services[0].bogus: unknown key"),
    ({"role": "boss"}, "role: must be one of"),
    ({"role": 5}, "role: must be a string"),
    ({"http_listen": "nope"}, "http_listen"),
    ({"http_listen": "127.0.0.1:70000"}, "http_listen"),
    ({"grpc_listen": "example.com:1"}, "grpc_listen"),
    ({"state_dir": "relative/dir"}, "state_dir: must be an absolute path"),
    ({"services": []}, "services: at least one"),
    ({"services": "x"}, "services: at least one"),
    ({"svc": {"name": "../evil"}}, "services[0].name"),
    ({"svc": {"name": "x" * 100}}, "services[0].name"),
    ({"svc": {"command": []}}, "services[0].command"),
    ({"svc": {"command": "python3 x.py"}}, "services[0].command"),
    ({"svc": {"command": ["a", 1]}}, "services[0].command"),
    ({"svc": {"backend": "docker"}}, "services[0].backend"),
    ({"svc": {"stop_signal": "SIGNOPE"}}, "services[0].stop_signal"),
    ({"svc": {"stop_timeout": -1}}, "services[0].stop_timeout"),
    ({"svc": {"stop_timeout": "10"}}, "services[0].stop_timeout"),
    ({"svc": {"start_secs": True}}, "services[0].start_secs"),
    ({"svc": {"restart": "sometimes"}}, "services[0].restart"),
    ({"svc": {"crash_loop_max": 1.5}}, "services[0].crash_loop_max"),
    ({"svc": {"backoff_initial": 10, "backoff_max": 1}}, "services[0].backoff_max"),
    ({"svc": {"env": {"BAD-NAME": "x"}}}, "services[0].env"),
    ({"svc": {"env": {"A": 1}}}, "services[0].env"),
    ({"svc": {"log_max_bytes": 10}}, "services[0].log_max_bytes"),
    ({"svc": {"success_exit_codes": [300]}}, "services[0].success_exit_codes"),
    ({"svc": {"working_directory": "rel"}}, "services[0].working_directory"),
    ({"svc": {"install_root": "rel"}}, "services[0].install_root"),
    ({"http_listen": "0.0.0.0:3081"}, "auth_token_file: required"),
    ({"insecure_no_auth": "yes"}, "insecure_no_auth"),
])
def test_bad_values_name_the_key(over, key):
    with pytest.raises(ConfigError) as err:
        config.parse(doc(**over))
    assert key in str(err.value)


def test_duplicate_service_names():
    d = doc()
    d["services"].append(dict(d["services"][0]))
    with pytest.raises(ConfigError, match=r"services\[1\].name: duplicate"):
        config.parse(d)


def test_missing_command_for_process_backend_but_not_systemd():
    d = doc()
    del d["services"][0]["command"]
    with pytest.raises(ConfigError, match=r"services\[0\].command: required"):
        config.parse(d)
    d["services"][0]["backend"] = "systemd"
    assert config.parse(d).primary.backend == "systemd"


def test_exposed_listen_with_explicit_insecure_flag_is_allowed():
    cfg = config.parse(doc(http_listen="0.0.0.0:3081", insecure_no_auth=True))
    assert not cfg.http_listen.is_loopback


def test_hub_role_binds_loopback_by_default():
    cfg = config.parse(doc(role="hub"))
    assert cfg.http_listen.is_loopback and cfg.grpc_listen.is_loopback


@pytest.mark.parametrize("content", [b"not = [toml", b"\xff\xfe", b"x" * (2 << 20)])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "m.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        config.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")


def test_cli_reports_config_errors_with_the_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('state_dir = "/tmp/x"\nfrobnicate = 1\n[[services]]\nname = "a"\n'
                    'command = ["true"]\n')
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config", str(path)],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2
    assert "frobnicate: unknown key" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "manager.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, timeout=30,
                         cwd=ROOT)
    assert out.returncode == 2
