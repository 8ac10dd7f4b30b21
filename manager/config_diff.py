"""What a config reload would change, as pure functions of the old and new config.

- `fixed_change(old, new)`: the first key a reload cannot change (listeners, state_dir,
  TLS and token files, the hub link, logging, the primary service's name), as the
  message of the refusal; "" when there is none.
- `diff(old, new)`: the services added, removed, changed (any key of their spec,
  `after` and the health check included; for an instance, not how many siblings it
  has) and unchanged, by name, in config order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from manager.config import ManagerConfig, ServiceConfig

# Keys a running manager holds on to (open sockets, files, the lock, its log setup).
FIXED = ("state_dir", "http_listen", "grpc_listen", "grpc_socket", "grpc_max_calls", "tls",
         "http_tls", "auth_token_file", "auth_tokens", "insecure_no_auth", "hub",
         "log_level", "log_format")


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _fixed(config: ManagerConfig, key: str) -> object:
    value = getattr(config, key)
    if key == "tls" and value is not None:
        return value.files  # the files are re-read on reload; their paths are fixed
    return value


def fixed_change(old: ManagerConfig, new: ManagerConfig) -> str:
    for key in FIXED:
        if _fixed(old, key) != _fixed(new, key):
            return f"{key}: cannot change by reload (restart the manager to change it)"
    if old.primary.name != new.primary.name:
        return (f"services[0].name: the primary service cannot change by reload (it is "
                f"{old.primary.name!r}, the file says {new.primary.name!r}); restart the "
                "manager to change it")
    return ""


def _spec(svc: ServiceConfig) -> ServiceConfig:
    """What makes a service's process: its config but the count of its siblings (web-1
    is the same process whether there are 2 or 3 instances)."""
    return replace(svc, instances=None)


def diff(old: ManagerConfig, new: ManagerConfig) -> ConfigDiff:
    before = {s.name: _spec(s) for s in old.services}
    after = {s.name: _spec(s) for s in new.services}
    return ConfigDiff(
        added=[n for n in after if n not in before],
        removed=[n for n in before if n not in after],
        changed=[n for n in after if n in before and after[n] != before[n]],
        unchanged=[n for n in after if n in before and after[n] == before[n]])
