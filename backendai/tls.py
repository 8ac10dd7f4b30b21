"""TLS material for gRPC channels, from certificate files (PEM).

Server side: a certificate and key, plus a client CA to require and verify client
certificates (mutual TLS). Client side: a CA to verify the server, plus a certificate
and key to present when the server wants mutual TLS. Files are read once at start (and
again on SIGHUP); errors name the config key.

Read from a config table, the files are also checked as the daemon will use them, so
`--check-config` and the start refuse the same things with the same words: paths are
absolute, a private key is not readable by others (like a token file), the certificate
and the key parse and belong together, a CA file holds certificates. (The check loads
`ssl` only in daemons that have TLS configured.)
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from backendai.errors import ConfigError

if TYPE_CHECKING:
    import ssl

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


def read_private_key(path: Path, key: str) -> bytes:
    """A private key file: PEM, and like a token file not readable or writable by others
    (group read is allowed, for a service group)."""
    data = read_pem(path, key)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        raise ConfigError(f"{key}: {str(path)!r} must not be writable or readable by others "
                          "(chmod 600)")
    return data


def check_files(cert: Path | None, key: Path | None, ca: bytes | None,
                keys: tuple[str, str, str]) -> None:
    """The certificate parses, the key is the certificate's (and not encrypted: gRPC
    cannot use one), the CA bundle holds certificates. `keys`: the config keys of the
    three, for the error."""
    import ssl  # noqa: PLC0415 - only daemons with TLS configured pay for it

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None and key is not None:
        try:
            ctx.load_verify_locations(cafile=str(cert))
        except (ssl.SSLError, OSError):
            raise ConfigError(f"{keys[0]}: {str(cert)!r} holds no valid certificate") from None
        try:
            ctx.load_cert_chain(cert, key, password=lambda: b"")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(f"{keys[1]}: {str(key)!r} is not the private key of the "
                                  f"certificate in {keys[0]}") from None
            raise ConfigError(f"{keys[1]}: {str(key)!r} holds no usable private key "
                              "(PEM, not encrypted)") from None
        except OSError as exc:
            raise ConfigError(f"{keys[1]}: cannot read {str(key)!r}: {exc.strerror}") from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"{keys[2]}: holds no valid certificate") from None


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
        cert = t.optional_path("cert_file", absolute=True)
        key = t.optional_path("key_file", absolute=True)
        ca = t.optional_path("client_ca_file", absolute=True)
        t.done()
        if cert is None or key is None:
            raise ConfigError(f"{t.prefix}: cert_file and key_file are both required")
        return cls._read(cert, key, ca, t.prefix)

    @classmethod
    def _read(cls, cert: Path, key: Path, ca: Path | None, prefix: str) -> ServerTLS:
        names = (f"{prefix}.cert_file", f"{prefix}.key_file", f"{prefix}.client_ca_file")
        tls = cls(read_pem(cert, names[0]), read_private_key(key, names[1]),
                  read_pem(ca, names[2]) if ca else None, (cert, key, ca), prefix)
        check_files(cert, key, tls.client_ca, names)
        return tls

    def reread(self) -> ServerTLS:
        """The same files read again (ConfigError naming the key if one is unusable)."""
        if self.files is None:
            return self
        return self._read(*self.files, self.prefix)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None)


def server_ssl_context(tls: ServerTLS) -> ssl.SSLContext:
    """An `ssl` server context from `[tls]`'s files (the HTTPS listener; gRPC has its own
    TLS): TLS 1.2 or later; with client_ca_file, a client certificate from that CA is
    required (mutual TLS)."""
    import ssl  # noqa: PLC0415 - only daemons that serve HTTPS pay for it

    if tls.files is None:
        raise ConfigError(f"{tls.prefix}: HTTPS needs cert_file and key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.files[0], tls.files[1], password=lambda: b"")
    if tls.client_ca is not None:
        ctx.load_verify_locations(cadata=tls.client_ca.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ReloadableServerCredentials:
    """Server credentials whose certificate, key and client CA can be replaced while the
    server runs (SIGHUP): gRPC asks `_fetch` before every new TLS handshake, so new
    connections get the new files and open ones keep theirs. The HTTPS listener's
    `ssl_context()` does the same: each handshake switches to the newest context (the
    server-name callback, called for every ClientHello)."""

    def __init__(self, tls: ServerTLS) -> None:
        self.current = tls
        self._pending: ServerTLS | None = None
        self._ssl: ssl.SSLContext | None = None  # the newest HTTPS context, once asked
        self._ssl_base: ssl.SSLContext | None = None  # the listener's own

    def ssl_context(self) -> ssl.SSLContext:
        """The context for an HTTPS listener; it follows reloads."""
        base = server_ssl_context(self.current)
        self._ssl = self._ssl_base = base

        def newest(sslobj: ssl.SSLObject, server_name: str | None,
                   ctx: ssl.SSLContext) -> None:
            if self._ssl is not None and self._ssl is not ctx:
                sslobj.context = self._ssl

        base.sni_callback = newest
        return base

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
        """Serve `new` from the next handshake on (prepare() checked it)."""
        if self._ssl_base is not None:
            # built whole before it is swapped in: a handshake sees the old or the new one
            self._ssl = server_ssl_context(new)
            if new.client_ca is not None:
                # client certificates are verified with the listener's own store (an
                # OpenSSL connection keeps it when its context is switched): add the CA
                self._ssl_base.load_verify_locations(cadata=new.client_ca.decode("ascii"))
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
        ca = t.optional_path("ca_file", absolute=True)
        cert = t.optional_path("cert_file", absolute=True)
        key = t.optional_path("key_file", absolute=True)
        name = t.text("server_name", min_len=1, max_len=253, default="") or None
        t.done()
        prefix = t.prefix
        if (cert is None) != (key is None):
            raise ConfigError(f"{prefix}: cert_file and key_file go together")
        names = (f"{prefix}.cert_file", f"{prefix}.key_file", f"{prefix}.ca_file")
        tls = cls(read_pem(ca, names[2]) if ca else None,
                  read_pem(cert, names[0]) if cert else None,
                  read_private_key(key, names[1]) if key else None, name,
                  (cert, key) if cert and key else None)
        check_files(cert, key, tls.ca, names)
        return tls

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
