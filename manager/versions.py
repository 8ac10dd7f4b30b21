"""Release version strings: validated strictly before they name a URL or a directory."""

from __future__ import annotations

import re

from backendai.errors import InvalidArgument

MAX_VERSION_LEN = 64
# Letters, digits, '.', '_', '+', '-'; starts with a letter or digit; never '..' anywhere.
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def validate_version(version: object) -> str:
    """The version if it is safe as a path component and URL segment; InvalidArgument if not."""
    if not isinstance(version, str):
        raise InvalidArgument("version must be a string")
    if not version:
        raise InvalidArgument("version must not be empty")
    if len(version) > MAX_VERSION_LEN:
        raise InvalidArgument(f"version is longer than {MAX_VERSION_LEN} characters")
    if not version.isascii() or not VERSION_RE.fullmatch(version) or ".." in version:
        raise InvalidArgument(
            "version may only hold ASCII letters, digits, '.', '_', '+', '-' (no path "
            f"characters, no '..'), starting with a letter or digit; got {version[:80]!r}")
    return version
