"""Opaque, prefixed identifiers (`it_...`, `job_...`)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str) -> str:
    """`<prefix>_` + 10 chars of millisecond time + 16 random chars.

    The time part makes ids roughly sortable by creation, which keeps index
    inserts local; 80 random bits make them unguessable.
    """
    millis = int(time.time() * 1000)
    head = "".join(_ALPHABET[(millis >> shift) & 31] for shift in range(45, -1, -5))
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return f"{prefix}_{head}{tail}"
