"""TLS material for gRPC channels, from certificate files (PEM).

Server side: a certificate and key, plus a client CA to require and verify client
certificates (mutual TLS). Client side: a CA to verify the server, plus a certificate
and key to present when the server wants mutual TLS. Files are read once at start;
errors name the config key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from backendai.errors import ConfigError

if TYPE_CHECKING:
    from backendai.config import Table  # which reads these tables with from_table

MAX_PEM_BYTES = 1 << 20


def read_pem(path: Path, key: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror}") from None
    if not data or len(data) > MAX_PEM_BYTES or b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {str(path)!r} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """`[tls]`: cert_file, key_file, client_ca_file (set: mutual TLS)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None
    files: tuple[Path, Path, Path | None] | None = None  # where they were read from
    prefix: str = "tls"

    @classmethod
    def from_table(cls, t: Table) -> ServerTLS:
        cert = t.optional_path("cert_file")
        key = t.optional_path("key_file")
        ca = t.optional_path("client_ca_file")
        t.done()
        if cert is None or key is None:
            raise ConfigError(f"{t.prefix}: cert_file and key_file are both required")
        return cls._read(cert, key, ca, t.prefix)

    @classmethod
    def _read(cls, cert: Path, key: Path, ca: Path | None, prefix: str) -> ServerTLS:
        return cls(read_pem(cert, f"{prefix}.cert_file"), read_pem(key, f"{prefix}.key_file"),
                   read_pem(ca, f"{prefix}.client_ca_file") if ca else None,
                   (cert, key, ca), prefix)

    def reread(self) -> ServerTLS:
        """The same files read again (ConfigError naming the key if one is unusable)."""
        if self.files is None:
            return self
        return self._read(*self.files, self.prefix)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None)


class ReloadableServerCredentials:
    """Server credentials whose certificate, key and client CA can be replaced while the
    server runs (SIGHUP): gRPC asks `_fetch` before every new TLS handshake, so new
    connections get the new files and open ones keep theirs."""

    def __init__(self, tls: ServerTLS) -> None:
        self.current = tls
        self._pending: ServerTLS | None = None

    @staticmethod
    def _config(tls: ServerTLS) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config(self.current), self._fetch,
            require_client_authentication=self.current.client_ca is not None)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        pending, self._pending = self._pending, None
        return self._config(pending) if pending is not None else None

    def prepare(self) -> ServerTLS:
        """Read the files again; raises ConfigError (and changes nothing) when unusable."""
        new = self.current.reread()
        if (new.client_ca is None) != (self.current.client_ca is None):
            raise ConfigError(f"{new.prefix}.client_ca_file: turning mutual TLS on or off "
                              "needs a restart")
        return new

    def use(self, new: ServerTLS) -> None:
        self.current = self._pending = new


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """`[..._tls]` of a client: ca_file (else the system roots), cert_file + key_file
    (mutual TLS), server_name (override the name checked in the server certificate)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None
    cert_files: tuple[Path, Path] | None = None  # (cert, key) as configured, for ssl

    @classmethod
    def from_table(cls, t: Table) -> ClientTLS:
        ca = t.optional_path("ca_file")
        cert = t.optional_path("cert_file")
        key = t.optional_path("key_file")
        name = t.text("server_name", min_len=1, max_len=253, default="") or None
        t.done()
        prefix = t.prefix
        if (cert is None) != (key is None):
            raise ConfigError(f"{prefix}: cert_file and key_file go together")
        return cls(read_pem(ca, f"{prefix}.ca_file") if ca else None,
                   read_pem(cert, f"{prefix}.cert_file") if cert else None,
                   read_pem(key, f"{prefix}.key_file") if key else None, name,
                   (cert, key) if cert and key else None)

    @classmethod
    def from_files(cls, ca: Path | None = None, cert: Path | None = None,
                   key: Path | None = None, server_name: str | None = None, *,
                   names: tuple[str, str, str] = ("ca_file", "cert_file", "key_file"),
                   ) -> ClientTLS:
        """For command lines (aictl --tls-ca/--tls-cert/--tls-key): `names` are what
        errors call the three files."""
        if (cert is None) != (key is None):
            raise ConfigError(f"{names[1]} and {names[2]} go together")
        return cls(read_pem(ca, names[0]) if ca else None,
                   read_pem(cert, names[1]) if cert else None,
                   read_pem(key, names[2]) if key else None, server_name or None)

    def channel_options(self) -> list[tuple[str, str]]:
        """Options a channel needs besides the credentials (the name to check)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)
