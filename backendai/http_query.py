"""Typed query parameters for HTTP routes (`Request.query`, already checked by the router
for unknown and repeated names): each parser answers 400 naming the parameter and
what it takes, never guesses, and bounds what it accepts."""

from __future__ import annotations

import re

from backendai.errors import InvalidArgument
from backendai.http_server import Request

_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def query_int(req: Request, key: str, default: int, low: int, high: int) -> int:
    text = req.query.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and low <= int(text) <= high):
        raise InvalidArgument(f"{key} must be an integer between {low} and {high}, "
                              f"got {text[:40]!r}")
    return int(text)


def query_seconds(req: Request, key: str, default: float, low: float, high: float) -> float:
    text = req.query.get(key)
    if text is None:
        return default
    if not _SECONDS.fullmatch(text) or not low <= float(text) <= high:
        raise InvalidArgument(f"{key} must be a number of seconds between {low:g} and "
                              f"{high:g}, got {text[:40]!r}")
    return float(text)


def query_flag(req: Request, key: str, default: bool = False) -> bool:
    text = req.query.get(key)
    if text is None:
        return default
    if text not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"{key} must be true or false, got {text[:40]!r}")
    return text in ("true", "1")


def query_text(req: Request, key: str, most: int) -> str:
    """A printable text of at most `most` characters ("" when absent)."""
    text = req.query.get(key, "")
    if len(text) > most or not text.isprintable():
        raise InvalidArgument(f"{key} must be printable text of at most {most} characters")
    return text
