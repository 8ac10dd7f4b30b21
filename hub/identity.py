"""Who this hub is among several: its id in the lease table and the address other hubs
give clients for it.

The id defaults to one generated at the first start and kept in `state_dir/hub_id`, so
it survives restarts (a restarted hub retakes its own lease at once: the state_dir lock
proves its previous process is gone) and differs between hubs — unless a state_dir is
copied to another machine, which is why `[ha] hub_id` can be set.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.validate import check_host_name, default_host_name

WILDCARD_HOSTS = ("0.0.0.0", "::")  # noqa: S104 - recognising, not binding


def stored_hub_id(state_dir: Path) -> str:
    """The id kept in `state_dir/hub_id` ("" when there is none yet), checked as the
    start reads it; nothing is written (--check-config calls this)."""
    path = state_dir / "hub_id"
    try:
        text = path.read_text()[:100].strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"state_dir: cannot read {str(path)!r}: {why}") from None
    if not text:
        return ""
    try:
        return check_host_name(text, str(path))
    except InvalidArgument as exc:
        raise ConfigError(f"state_dir: {exc}; remove the file or set [ha] hub_id") from None


def local_hub_id(state_dir: Path) -> str:
    """The stored id, or a new one kept in `state_dir/hub_id` from now on."""
    stored = stored_hub_id(state_dir)
    if stored:
        return stored
    path = state_dir / "hub_id"
    hub_id = f"{default_host_name('hub').split('.')[0][:40]}-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(hub_id + "\n")
    os.replace(tmp, path)
    return hub_id


def advertise_address(configured: str, listen: ListenAddress, port: int) -> str:
    """`[ha] advertise_address`, else the bound listen address (a wildcard host: this
    machine's name)."""
    if configured:
        return configured
    host = socket.getfqdn() if listen.host in WILDCARD_HOSTS else listen.host
    return str(ListenAddress(host, port)) if ":" in host else f"{host}:{port}"
