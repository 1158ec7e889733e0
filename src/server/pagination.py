"""Opaque page tokens (AIP-158).

A token is url-safe base64 of JSON holding the cursor and a fingerprint of
the filters it was issued for, followed by an HMAC-SHA256 of that JSON under
the server's page-token key. A token a client made up or edited (random
bytes, a changed cursor) fails the MAC and is refused before its cursor
reaches a query; a genuine token replayed with other filters (another list,
project or filter) is refused by its fingerprint instead of silently
skipping results.

The key comes from `GEOPERA_PAGE_TOKEN_KEY` or, when unset, from the
database (generated once, so every replica signs and checks with the same
key); `install_page_token_key` sets it at startup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from geopera_kernel.server.errors import DomainError, invalid_argument
from geopera_kernel.server.store.queries import Q

if TYPE_CHECKING:
    from geopera_kernel.server.store.database import Database

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: forging one is out of reach
_MAX_TOKEN_CHARS = 4096

# Until the server installs its key (tools that never page across processes).
_key: bytes = secrets.token_bytes(32)


def install_page_token_key(key: bytes) -> None:
    """Sign and check page tokens with `key` (at least 16 bytes) from now on."""
    global _key
    if len(key) < 16:
        raise ValueError("a page-token key needs at least 16 bytes")
    _key = key


async def load_page_token_key(db: Database, configured: str) -> bytes:
    """The configured key, else the database's (created by the first server
    to start, so replicas agree and tokens survive restarts)."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    async with db.connection() as conn:
        await conn.execute(Q.insert_server_key, {"name": "page_token", "secret": secrets.token_bytes(32)})
        row = await (await conn.execute(Q.get_server_key, {"name": "page_token"})).fetchone()
    assert row is not None
    return bytes(row["secret"])


def page_size_or_default(page_size: int) -> int:
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid_argument("INVALID_PAGE_SIZE", f"page_size must be 0..{MAX_PAGE_SIZE}", field="page_size")
    return page_size or DEFAULT_PAGE_SIZE


def _fingerprint(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _mac(body: bytes) -> bytes:
    return hmac.new(_key, body, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


def encode_page_token(cursor: dict[str, Any], filters: dict[str, Any]) -> str:
    body = json.dumps({"c": cursor, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(_mac(body))}"


def page(
    rows: Sequence[dict[str, Any]],
    limit: int,
    record: Callable[[dict[str, Any]], T],
    cursor: Callable[[T], dict[str, Any]],
    filters: dict[str, Any],
) -> tuple[list[T], str]:
    """A page of records from `rows` fetched with `limit + 1`: the first `limit`,
    and the token of the next page (from the last one's `cursor`) when there was one more."""
    records = [record(r) for r in rows[:limit]]
    return records, encode_page_token(cursor(records[-1]), filters) if len(rows) > limit else ""


def _not_issued() -> DomainError:
    return invalid_argument("INVALID_PAGE_TOKEN", "page_token is not a token this service issued", field="page_token")


def decode_page_token(token: str, filters: dict[str, Any]) -> dict[str, Any] | None:
    """The cursor of `token`, or None for the first page."""
    if not token:
        return None
    body_text, dot, mac_text = token.partition(".")
    if not dot or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise _not_issued()
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise _not_issued() from exc
    if not hmac.compare_digest(mac, _mac(body)):
        raise _not_issued()
    try:
        decoded = json.loads(body)
        cursor, fingerprint = decoded["c"], decoded["f"]
    except (ValueError, KeyError, TypeError) as exc:  # signed by us, so never expected
        raise _not_issued() from exc
    if not isinstance(cursor, dict):
        raise _not_issued()
    if fingerprint != _fingerprint(filters):
        raise invalid_argument(
            "INVALID_PAGE_TOKEN",
            "page_token was issued for different filters; repeat the first request's filters",
            field="page_token",
        )
    return cursor
