"""Opaque page tokens (AIP-158).

A token is url-safe base64 of JSON holding the cursor and a fingerprint of
the filters it was issued for, so a token replayed with other filters is
refused instead of silently skipping results.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from server.errors import invalid_argument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size_or_default(page_size: int) -> int:
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid_argument("INVALID_PAGE_SIZE", f"page_size must be 0..{MAX_PAGE_SIZE}", field="page_size")
    return page_size or DEFAULT_PAGE_SIZE


def _fingerprint(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(cursor: dict[str, Any], filters: dict[str, Any]) -> str:
    body = json.dumps({"c": cursor, "f": _fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_page_token(token: str, filters: dict[str, Any]) -> dict[str, Any] | None:
    """The cursor of `token`, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor, fingerprint = body["c"], body["f"]
        if not isinstance(cursor, dict):
            raise ValueError("cursor is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_argument(
            "INVALID_PAGE_TOKEN", "page_token is not a token this service issued", field="page_token"
        ) from exc
    if fingerprint != _fingerprint(filters):
        raise invalid_argument(
            "INVALID_PAGE_TOKEN",
            "page_token was issued for different filters; repeat the first request's filters",
            field="page_token",
        )
    return cursor
