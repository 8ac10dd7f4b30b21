"""Listen addresses: "host:port" strings, validated, with a loopback test."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse "127.0.0.1:3081", "[::1]:0", "0.0.0.0:3082". Raises ValueError."""
        if not isinstance(text, str) or not text or len(text) > 300:
            raise ValueError("expected \"HOST:PORT\"")
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected \"HOST:PORT\", got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port must be 0-65535, got {port_text!r}")
        if host != "localhost":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
        return cls(host, int(port_text))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
