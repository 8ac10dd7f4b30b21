"""Every config key a loader reads is documented: docs/CONFIG.md (manager) and
docs/CONFIG_HUB_AGENT.md (hub, agent). The keys come from the loaders themselves (each
records what it read before rejecting the rest), so a new key without a doc row fails
here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from backendai import config as config_reader
from manager import config as manager_config
from tests.conftest import ROOT

DOCS = ROOT / "docs"


def section(doc: Path, heading: str) -> str:
    """The text of the `## heading…` section (up to the next `## `)."""
    text = doc.read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def documented(text: str) -> set[str]:
    """Keys in the first column of the section's tables: `key`, `[table]`, `[[array]]`
    (a cell may name several: "`user`, `group`")."""
    keys = set()
    for cell in re.findall(r"^\| ([^|]+) \|", text, flags=re.MULTILINE):
        keys |= {k.strip("[]").split(".")[-1] for k in re.findall(r"`([^`]+)`", cell)}
    return keys


@pytest.fixture
def read_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """prefix -> the keys each loader's tables read (every loader reads through the one
    Table, whose `done()` sees every key its table and its parts read)."""
    seen: dict[str, set[str]] = {}
    done = config_reader.Table.done

    def record(table: Any) -> None:
        seen.setdefault(table.prefix, set()).update(table.seen)
        done(table)

    monkeypatch.setattr(config_reader.Table, "done", record)
    return seen


def test_every_manager_key_is_in_config_md(read_keys, tmp_path):
    manager_config.parse({"state_dir": str(tmp_path), "hub": {"address": "10.0.0.2:3000"},
                          "auth_tokens": [{"name": "t", "file": "/t"}],
                          "services": [{"name": "svc", "command": ["true"],
                                        "health": {"tcp": "127.0.0.1:1"}}]})
    doc = DOCS / "CONFIG.md"
    top, services, hub = read_keys[""], read_keys["services[0]"], read_keys["hub"]
    health = read_keys["services[0].health"]
    assert len(top) > 10 and len(services) > 40 and len(hub) > 5 and len(health) > 10
    assert top - documented(section(doc, "Top level")) - {"services", "hub"} == set()
    assert "auth_tokens" in top
    assert services - documented(section(doc, "`[[services]]`")) - {"health"} == set()
    assert hub - documented(section(doc, "`[hub]`")) == set()
    assert health - documented(section(doc, "`[services.health]`")) == set()
    tokens = read_keys["auth_tokens[0]"]
    assert tokens == {"name", "file", "role"}
    assert tokens - documented(section(doc, "`[[auth_tokens]]`")) == set()


def test_every_events_key_is_in_config_md(read_keys, tmp_path):
    manager_config.parse({"state_dir": str(tmp_path), "events": {"retention_count": 1000},
                          "event_sinks": [{"type": "jsonl"}],
                          "services": [{"name": "svc", "command": ["true"]}]})
    text = section(DOCS / "CONFIG.md", "Events")
    assert read_keys["events"] - documented(text) == set()
    assert read_keys["event_sinks[0]"] - documented(text) == set()


def test_every_hub_and_agent_key_is_in_config_hub_agent_md(read_keys, tmp_path):
    from agent import config as agent_config
    from hub import config as hub_config

    doc = DOCS / "CONFIG_HUB_AGENT.md"
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "hub"}"\ngrpc_listen = "127.0.0.1:0"\n')
    hub_config.load(path)
    hub_keys = read_keys.pop("")
    text = section(doc, "Hub")
    # `log_level`/`log_format` share a row: look for the key anywhere in the section
    missing = {k for k in hub_keys if f"`{k}`" not in text and f"[{k}]" not in text}
    assert missing == set()
    path = tmp_path / "agent.toml"
    path.write_text('name = "a1"\ngrpc_listen = "127.0.0.1:0"\n')
    agent_config.load(path)
    agent_keys = read_keys.pop("")
    text = section(doc, "Agent")
    missing = {k for k in agent_keys if f"`{k}`" not in text and f"[{k}]" not in text}
    assert missing == set()


def test_every_hub_store_and_ha_key_is_documented(read_keys, tmp_path):
    from hub import config as hub_config

    doc = DOCS / "CONFIG_HUB_AGENT.md"
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "hub"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    '[store]\nbackend = "sqlite"\n[ha]\nlease_ttl = 5\n')
    hub_config.load(path)
    text = section(doc, "Hub `[store]`")
    for table in ("store", "ha"):
        keys = read_keys[table]
        assert len(keys) >= 3
        assert keys - documented(text) == set(), table


def test_every_hub_admission_key_is_documented(read_keys, tmp_path):
    from hub import config as hub_config

    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "hub"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    '[admission]\nregister_rate = 5\n')
    hub_config.load(path)
    keys = read_keys["admission"]
    assert len(keys) == 6
    text = section(DOCS / "CONFIG_HUB_AGENT.md", "Hub `[admission]`")
    assert keys - documented(text) == set()
