"""Signed URLs: a GET of one resource path (or of every path under a prefix,
for tile URL templates) that needs no header until it expires.

A signed URL carries four query parameters besides its own:

- `expires`: the expiry, whole seconds since the epoch;
- `key`: the id of the key that signed it;
- `prefix`: for a prefix grant, the path prefix granted (ends with `/`);
- `signature`: base64url (no padding) of HMAC-SHA256 over
  `geopera-url-v1\\n{path or prefix}\\n{expires}\\n{key}\\n{path|prefix}`.

Keys come from `GEOPERA_SIGNING_KEYS` (`kid:secret,kid:secret`; the first signs,
every one verifies, so adding a new key in front and keeping the old one behind
it for a while rotates keys without breaking live URLs) or, when unset, from
one key generated once and kept in PostgreSQL (`server_keys`), so every replica
and every restart signs and checks alike.

`verify` refuses with PERMISSION_DENIED: `SIGNATURE_INVALID` (malformed,
forged, altered, another path, an unknown key) or `SIGNATURE_EXPIRED`. The
signature is checked before the expiry, in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from geopera_kernel.server.errors import invalid_argument, permission_denied
from geopera_kernel.server.store.queries import Q

if TYPE_CHECKING:
    from geopera_kernel.server.store.database import Database

MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 7 * 86400
DEFAULT_TTL_SECONDS = 3600
# The query parameters a signature owns (a resource's own parameters, e.g. a tile's
# `colormap`, are outside the signature: it grants the path, not one rendering).
SIGNATURE_PARAMS = ("expires", "key", "prefix", "signature")
DATABASE_KEY_ID = "db"
_DATABASE_KEY_NAME = "url_signing"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_MIN_SECRET_CHARS = 16
_DOMAIN = b"geopera-url-v1"


@dataclass(frozen=True)
class SigningKey:
    id: str
    # Out of the repr, as Settings.signing_keys is: a logged key must not give its secret away.
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Grant:
    """What a valid signature allows: `path` exactly, or every path under it
    when `prefix`; until `expires` (epoch seconds); signed with key `key_id`."""

    path: str
    prefix: bool
    expires: int
    key_id: str


def parse_signing_keys(text: str) -> list[SigningKey]:
    """`kid:secret,kid:secret` (the GEOPERA_SIGNING_KEYS syntax); "" is none."""
    keys: list[SigningKey] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kid, colon, secret = part.partition(":")
        if not colon or not _KEY_ID.match(kid):
            raise ValueError("GEOPERA_SIGNING_KEYS: each key is `id:secret` with an id of 1-32 of A-Za-z0-9_.-")
        if len(secret) < _MIN_SECRET_CHARS:
            raise ValueError(f"GEOPERA_SIGNING_KEYS: the secret of key {kid!r} needs {_MIN_SECRET_CHARS}+ characters")
        if any(k.id == kid for k in keys):
            raise ValueError(f"GEOPERA_SIGNING_KEYS: key id {kid!r} appears twice")
        keys.append(SigningKey(kid, secret.encode()))
    return keys


async def load_signing_keys(db: Database, configured: str) -> list[SigningKey]:
    """The configured keys, else the database's one (created by the first
    server that needs it, so replicas agree and URLs survive restarts)."""
    keys = parse_signing_keys(configured)
    if keys:
        return keys
    async with db.connection() as conn:
        await conn.execute(Q.insert_server_key, {"name": _DATABASE_KEY_NAME, "secret": secrets.token_bytes(32)})
        row = await (await conn.execute(Q.get_server_key, {"name": _DATABASE_KEY_NAME})).fetchone()
    assert row is not None
    return [SigningKey(DATABASE_KEY_ID, bytes(row["secret"]))]


def ttl_or_default(ttl_seconds: int | float) -> int:
    """The TTL to sign with: 0 means the default (1 h); else 1 s .. 7 days."""
    if not ttl_seconds:
        return DEFAULT_TTL_SECONDS
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise invalid_argument(
            "INVALID_TTL",
            f"ttl_seconds must be {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS} (7 days), or 0 for {DEFAULT_TTL_SECONDS}",
            field="ttl_seconds",
        )
    return int(ttl_seconds)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _is_number(text: str) -> bool:
    # str.isdigit() alone admits "²" and other digits int() refuses.
    return text.isascii() and text.isdigit()


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def _invalid(message: str) -> Exception:
    return permission_denied("SIGNATURE_INVALID", message)


class UrlSigner:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a URL signer needs at least one key")
        self._keys = {key.id: key for key in keys}
        self._signing = keys[0]

    @staticmethod
    def _mac(key: SigningKey, granted: str, expires: int, prefix: bool) -> bytes:
        kind = b"prefix" if prefix else b"path"
        message = b"\n".join((_DOMAIN, granted.encode(), str(expires).encode(), key.id.encode(), kind))
        return hmac.new(key.secret, message, hashlib.sha256).digest()

    def sign(
        self, path: str, ttl_seconds: int | float = 0, *, prefix: bool = False, now: float | None = None
    ) -> tuple[dict[str, str], int]:
        """The query parameters that grant a GET of `path` (every path under it
        when `prefix`: it must then end with `/`), and their expiry (epoch
        seconds). `path` is the decoded URL path, starting with `/`."""
        if not path.startswith("/") or _has_dot_segment(path) or (prefix and not path.endswith("/")):
            raise ValueError(f"cannot sign {path!r}: an absolute path without dot segments (a prefix ends with /)")
        expires = int(time.time() if now is None else now) + ttl_or_default(ttl_seconds)
        key = self._signing
        query = {"expires": str(expires), "key": key.id}
        if prefix:
            query["prefix"] = path
        query["signature"] = _b64(self._mac(key, path, expires, prefix))
        return query, expires

    def signed_query(self, path: str, ttl_seconds: int | float = 0, *, prefix: bool = False) -> tuple[str, int]:
        """The URL query (without `?`) granting `path`, and its expiry (epoch
        seconds). For a prefix grant, append it to any URL under the prefix: a
        tile template is `{base}{prefix}WebMercatorQuad/{z}/{x}/{y}.png?{query}`."""
        query, expires = self.sign(path, ttl_seconds, prefix=prefix)
        return urlencode(query), expires

    def signed_url(
        self, base_url: str, path: str, ttl_seconds: int | float = 0, *, prefix: bool = False
    ) -> tuple[str, int]:
        """`base_url` + `path` + the signature query, and its expiry (epoch
        seconds); for a prefix grant the URL is of the prefix itself."""
        query, expires = self.signed_query(path, ttl_seconds, prefix=prefix)
        return f"{base_url.rstrip('/')}{quote(path)}?{query}", expires

    def verify(self, path: str, query: Mapping[str, str], *, now: float | None = None) -> Grant:
        """The grant a request's signature query gives for `path` (the decoded
        request path); raises PERMISSION_DENIED when it gives none."""
        expires_text, key_id, signature = query.get("expires", ""), query.get("key", ""), query.get("signature", "")
        granted = query.get("prefix")
        if not _is_number(expires_text) or len(expires_text) > 12 or not signature or len(signature) > 100:
            raise _invalid("the URL's signature parameters (expires, key, signature) are missing or malformed")
        key = self._keys.get(key_id)
        if key is None:
            raise _invalid("the URL was signed with a key this server does not hold (revoked or foreign)")
        expires = int(expires_text)
        is_prefix = granted is not None
        granted_path = path if granted is None else granted
        expected = _b64(self._mac(key, granted_path, expires, is_prefix))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise _invalid("the URL's signature does not match (forged or altered)")
        if is_prefix and (not path.startswith(granted_path) or _has_dot_segment(path)):
            raise _invalid("the URL's signature grants another path prefix")
        if expires <= (time.time() if now is None else now):
            raise permission_denied(
                "SIGNATURE_EXPIRED", "the signed URL has expired; ask for a new one (assets.sign)", expires=expires_text
            )
        return Grant(granted_path, is_prefix, expires, key.id)
