"""Checks a downloaded package against SHA256SUMS, and SHA256SUMS against a detached
Ed25519 signature when a public key is configured (then unsigned releases are refused).

Crypto is the `cryptography` package's Ed25519; nothing hand-written here. It is imported
where it is used: loading it costs the idle manager ~7 MB RSS (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from backendai.errors import BackendAIError

SUMS_NAME = "SHA256SUMS"
SIG_NAME = "SHA256SUMS.sig"
MAX_SUMS_BYTES = 64 * 1024
MAX_SIG_BYTES = 4096
HASH_CHUNK = 1 << 20
_LINE_RE = re.compile(r"^([0-9a-fA-F]{64}) [ *]([^/\x00]+)$")


class VerifyFailed(BackendAIError):
    """A package failed its checksum or signature check: it is never installed."""


def parse_sums(text: str) -> dict[str, str]:
    """`<hex>  <file name>` lines (GNU sha256sum format) -> {file name: lowercase hex}."""
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE_RE.match(line)
        if m is None:
            raise VerifyFailed(f"{SUMS_NAME} line {n} is not '<sha256>  <file name>'")
        name = m.group(2)
        if name in sums and sums[name] != m.group(1).lower():
            raise VerifyFailed(f"{SUMS_NAME} lists {name!r} twice with different hashes")
        sums[name] = m.group(1).lower()
    return sums


def sha256_file(path: Path) -> str:
    import hashlib  # noqa: PLC0415 - OpenSSL's digests, ~0.7 MB RSS: at the first verify

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def load_public_key(path: Path) -> bytes:
    """A public key file as written by `aictl release keygen` (PEM), or raw/base64 32 bytes."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - see top
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} is not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raw = data if len(data) == 32 else base64.b64decode(data.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError(f"{path} does not hold a 32-byte Ed25519 public key")
    return raw


def decode_signature(data: bytes) -> bytes:
    """A detached signature file: base64 text (what we write) or the raw 64 bytes."""
    if len(data) == 64:
        return data
    try:
        sig = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VerifyFailed(f"{SIG_NAME} is not a base64 Ed25519 signature") from None
    if len(sig) != 64:
        raise VerifyFailed(f"{SIG_NAME} is not a 64-byte Ed25519 signature")
    return sig


def verify_signature(sums: bytes, signature: bytes | None, public_key: bytes) -> None:
    if signature is None:
        raise VerifyFailed(f"release is not signed ({SIG_NAME} missing) but a public key is "
                           "configured: unsigned releases are refused")
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see top
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(decode_signature(signature), sums)
    except InvalidSignature:
        raise VerifyFailed(f"{SIG_NAME} does not match {SUMS_NAME} for the configured "
                           "public key") from None


def verify_package(package: Path, name: str, sums: bytes, signature: bytes | None,
                   public_key: bytes | None) -> str:
    """Raise VerifyFailed unless the package matches; return its sha256. Blocking: thread."""
    if public_key is not None:
        verify_signature(sums, signature, public_key)
    try:
        text = sums.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyFailed(f"{SUMS_NAME} is not UTF-8 text") from None
    expected = parse_sums(text).get(name)
    if expected is None:
        raise VerifyFailed(f"{SUMS_NAME} has no entry for {name!r}")
    actual = sha256_file(package)
    if actual != expected:
        raise VerifyFailed(f"checksum mismatch for {name}: expected {expected[:16]}…, "
                           f"got {actual[:16]}…")
    return actual
