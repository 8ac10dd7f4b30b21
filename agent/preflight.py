"""What the agent checks at start beyond its config file: its token files (the one
callers send, `auth_token_file`, and the one it sends the hub, `hub_token_file`):
readable, private, one token each. `AgentDaemon.run` and `ai-agent --check-config` call
this same function, so both refuse the same things in the same words; `[tls]` and
`[hub_tls]` are checked when the config is read (backendai/tls.py). The agent has no
state directory and no `[[auth_tokens]]` (its only API, GetInfo, is open)."""

from __future__ import annotations

from agent.config import AgentConfig
from backendai.auth import Token


def tokens(cfg: AgentConfig) -> tuple[Token | None, Token | None]:
    token = Token.from_file(cfg.auth_token_file) if cfg.auth_token_file else None
    hub_token = Token.from_file(cfg.hub_token_file, "hub_token_file") \
        if cfg.hub_token_file else None
    return token, hub_token


def check(cfg: AgentConfig) -> None:
    """--check-config: everything the start checks except binding."""
    tokens(cfg)
