"""The update keys of a manager service: defaults, and each bad value named by its key."""

from __future__ import annotations

import pytest

from backendai.errors import ConfigError
from manager import config


def doc(**svc):
    base = {"name": "agent", "command": ["bin/ai-agent"]}
    base.update(svc)
    return {"state_dir": "/var/lib/m", "services": [base]}


def test_update_defaults():
    svc = config.parse(doc(install_root="/opt/a",
                           package_url="http://nas:8888/api/raw/{version}/a-{version}.tgz")).primary
    assert svc.health.health_probe == "none" and svc.health.min_healthy_time == 5.0
    assert svc.health.healthy_deadline == 60.0 and svc.update.download_retries == 3
    assert svc.update.package_max_bytes == 1 << 30 and svc.update.keep_releases == 3


@pytest.mark.parametrize(("over", "key"), [
    ({"package_url": "http://nas/a.tgz", "install_root": "/opt/a"}, "package_url"),
    ({"package_url": "ftp://nas/{version}.tgz", "install_root": "/opt/a"}, "package_url"),
    ({"package_url": "http://u:p@nas/{version}.tgz", "install_root": "/opt/a"}, "package_url"),
    ({"package_url": "http://nas/{version}.tgz"}, "install_root"),
    ({"package_public_key": "keys/release.pub"}, "package_public_key"),
    ({"package_credentials_file": "cred"}, "package_credentials_file"),
    ({"package_ca_file": "ca.pem"}, "package_ca_file"),
    ({"health_probe": "ping"}, "health_probe"),
    ({"health_probe": "http"}, "health_target"),
    ({"health_probe": "http", "health_target": "127.0.0.1:80"}, "health_target"),
    ({"health_probe": "tcp"}, "health_target"),
    ({"health_probe": "command"}, "health_command"),
    ({"health_probe": "tcp", "health_target": "h:1",
      "health_version_method": "a.B/C"}, "health_version_method"),
    ({"health_probe": "grpc", "health_target": "h:1",
      "health_version_method": "no slash"}, "health_version_method"),
    ({"min_healthy_time": -1}, "min_healthy_time"),
    ({"healthy_deadline": 0}, "healthy_deadline"),
    ({"package_max_bytes": 10}, "package_max_bytes"),
    ({"download_retries": 1000}, "download_retries"),
    ({"download_deadline": 0.5}, "download_deadline"),
    ({"package_client_cert": "/etc/c.pem"}, "package_client_cert: .* go together"),
    ({"package_client_cert": "c.pem", "package_client_key": "/k.pem"},
     "package_client_cert: must be an absolute path"),
    ({"download_deadline": "1h"}, "download_deadline"),
    ({"keep_releases": 1}, "keep_releases"),
])
def test_bad_update_keys_are_named(over, key):
    with pytest.raises(ConfigError, match=f"services\\[0\\].{key}"):
        config.parse(doc(**over))
