"""URL signing: what a signature grants and refuses, key rotation, and the
database key every replica shares."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.signing import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    UrlSigner,
    load_signing_keys,
    parse_signing_keys,
)
from geopera_kernel.server.store import connect_database

PATH = "/v1/items/it_1/assets/data"
NOW = 1_800_000_000.0


def signer(text: str = "k1:0123456789abcdef0123") -> UrlSigner:
    return UrlSigner(parse_signing_keys(text))


def refusal(signer_: UrlSigner, path: str, query: dict[str, str], now: float = NOW) -> str:
    with pytest.raises(DomainError) as caught:
        signer_.verify(path, query, now=now)
    assert caught.value.code == Code.PERMISSION_DENIED
    return caught.value.reason


def test_a_signed_path_verifies_until_it_expires():
    query, expires = signer().sign(PATH, 60, now=NOW)
    assert expires == NOW + 60 and set(query) == {"expires", "key", "signature"}
    grant = signer().verify(PATH, query, now=NOW + 59)
    assert (grant.path, grant.prefix, grant.expires, grant.key_id) == (PATH, False, expires, "k1")
    assert refusal(signer(), PATH, query, now=NOW + 60) == "SIGNATURE_EXPIRED"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"expires": str(int(NOW) + 10_000)}, PATH),  # a later expiry
        ({"signature": "A" * 43}, PATH),  # forged
        ({"signature": ""}, PATH),
        ({"key": "k9"}, PATH),  # a key this server does not hold
        ({"expires": "soon"}, PATH),
        ({"prefix": "/v1/items/"}, PATH),  # a path grant passed off as a prefix grant
        ({}, "/v1/items/it_1/assets/other"),  # another path
        ({}, "/v1/items/it_2/assets/data"),
    ],
)
def test_an_altered_or_forged_url_is_refused(change, where):
    query, _ = signer().sign(PATH, 60, now=NOW)
    assert refusal(signer(), where, {**query, **change}) == "SIGNATURE_INVALID"


def test_another_servers_key_does_not_verify():
    query, _ = signer("k1:another-secret-of-16+").sign(PATH, 60, now=NOW)
    assert refusal(signer(), PATH, query) == "SIGNATURE_INVALID"


def test_a_prefix_grant_covers_the_paths_under_it_only():
    prefix = "/v1/items/it_1/tiles/"
    query, _ = signer().sign(prefix, 60, prefix=True, now=NOW)
    assert query["prefix"] == prefix
    assert signer().verify(prefix + "WebMercatorQuad/3/4/2.png", query, now=NOW).prefix
    for outside in ("/v1/items/it_1/assets/data", "/v1/items/it_12/tiles/x.png", "/v1/items/it_1/tiles/../assets/d"):
        assert refusal(signer(), outside, query) == "SIGNATURE_INVALID"
    assert refusal(signer(), prefix + "a.png", {**query, "prefix": "/v1/items/"}) == "SIGNATURE_INVALID"
    with pytest.raises(ValueError):
        signer().sign("/v1/items/it_1/tiles", 60, prefix=True)  # a prefix ends with /
    # A template: the prefix's query appended to any path under it.
    template_query, _ = signer().signed_query(prefix, 60, prefix=True)
    tile = prefix + "WebMercatorQuad/{z}/{x}/{y}.png"
    filled = tile.format(z=3, x=4, y=2)
    assert signer().verify(filled, dict(parse_qsl(template_query))).path == prefix


def test_rotating_keys_keeps_live_urls_working():
    old = signer("old:0123456789abcdef0123")
    query, _ = old.sign(PATH, 60, now=NOW)
    rotated = signer("new:fedcba9876543210fedc,old:0123456789abcdef0123")
    assert rotated.verify(PATH, query, now=NOW).key_id == "old"
    new_query, _ = rotated.sign(PATH, 60, now=NOW)
    assert new_query["key"] == "new" and rotated.verify(PATH, new_query, now=NOW).key_id == "new"
    assert refusal(signer("new:fedcba9876543210fedc"), PATH, query) == "SIGNATURE_INVALID"  # old key dropped


def test_ttl_bounds():
    assert signer().sign(PATH, 0, now=NOW)[1] == NOW + DEFAULT_TTL_SECONDS
    assert signer().sign(PATH, MAX_TTL_SECONDS, now=NOW)[1] == NOW + MAX_TTL_SECONDS
    for ttl in (-1, MAX_TTL_SECONDS + 1):
        with pytest.raises(DomainError) as caught:
            signer().sign(PATH, ttl)
        assert (caught.value.code, caught.value.reason) == (Code.INVALID_ARGUMENT, "INVALID_TTL")


def test_signed_url_is_absolute_and_round_trips():
    url, expires = signer().signed_url("http://127.0.0.1:8080/", PATH, 60)
    assert expires > time.time()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://127.0.0.1:8080" + PATH
    assert signer().verify(parts.path, dict(parse_qsl(parts.query))).path == PATH


@pytest.mark.parametrize("text", ["k1", "k1:short", "bad id:0123456789abcdef", "a:0123456789abcdef,a:0123456789abcdef"])
def test_bad_configured_keys_are_refused(text):
    with pytest.raises(ValueError, match="GEOPERA_SIGNING_KEYS"):
        parse_signing_keys(text)


def test_the_database_key_is_generated_once_and_shared(database_url):
    async def load_twice() -> tuple[list, list]:
        first_db, second_db = await connect_database(database_url), await connect_database(database_url)
        try:
            return await load_signing_keys(first_db, ""), await load_signing_keys(second_db, "")
        finally:
            await first_db.close()
            await second_db.close()

    first, second = asyncio.run(load_twice())
    assert first == second and len(first[0].secret) == 32
    query, _ = UrlSigner(first).sign(PATH, 60)
    assert UrlSigner(second).verify(PATH, query).path == PATH


def test_configured_keys_win_over_the_database(database_url):
    async def load() -> list:
        db = await connect_database(database_url)
        try:
            return await load_signing_keys(db, "k1:0123456789abcdef0123")
        finally:
            await db.close()

    assert [key.id for key in asyncio.run(load())] == ["k1"]


def test_the_server_refuses_bad_keys_at_start(tmp_path):
    geopera = Path(sys.executable).parent / "geopera"
    env = {**os.environ, "GEOPERA_SIGNING_KEYS": "k1:short", "GEOPERA_HOME": str(tmp_path)}
    done = subprocess.run([str(geopera), "serve", "--listen", "127.0.0.1:0", "--http-listen", "off"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == "error: GEOPERA_SIGNING_KEYS: the secret of key 'k1' needs 16+ characters"
