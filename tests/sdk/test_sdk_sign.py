"""`sign()` (assets.sign) in the sync and asyncio SDK clients against the real
server: an absolute HTTP URL of the resource with its signature and expiry
that downloads it (whole or a range) with no header, and the download's
refusals (other project, missing scope, unknown asset, a TTL out of range) as
typed errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from urllib.parse import parse_qs, urlsplit

import pytest
from geopera_sdk import AsyncClient, Client, InvalidArgument, NotFound, PermissionDenied, SignedUrl

from tests.sdk.conftest import FAST_RETRIES
from tests.support.http_downloads import fetch

SCENE = "s2l1c_slovenia_20150711_bgrn"


def _assert_signed(signed: SignedUrl, base: str, path: str, ttl: int) -> None:
    parts = urlsplit(signed.url)
    assert f"{parts.scheme}://{parts.netloc}" == base and parts.path == path
    assert {"expires", "signature"} <= set(parse_qs(parts.query))
    assert int(parse_qs(parts.query)["expires"][0]) == int(signed.expire_time.timestamp())
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    assert signed.expire_time.tzinfo is not None and abs(signed.expire_time - expected) < dt.timedelta(seconds=10)
    assert str(signed) == signed.url


def test_sign_an_asset_and_its_defaults(client, world):
    asset = client.items.get(world.items[SCENE]).assets["data"]
    signed = client.sign(asset, ttl_seconds=600)
    _assert_signed(signed, world.server.http_url, f"/v1/{asset.href}", 600)
    _assert_signed(client.sign(asset.href), world.server.http_url, f"/v1/{asset.href}", 3600)  # the default
    # The URL downloads the bytes DownloadAsset sends, with no header; a Range reads a part.
    with io.BytesIO() as sink:
        client.download(asset, sink)
        stored = sink.getvalue()
    whole = fetch(signed.url)
    assert whole.status == 200 and hashlib.sha256(whole.body).hexdigest() == asset.sha256 and whole.body == stored
    part = fetch(signed.url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == stored[100:200]
    altered = fetch(signed.url.replace(asset.href, f"items/{world.items['s2l1c_slovenia_20150909_bgrn']}/assets/data"))
    assert altered.status == 403


async def test_the_async_client_signs_too(world):
    async with AsyncClient(world.server.address, world.tokens["alpha"], retries=FAST_RETRIES) as client:
        href = f"items/{world.items[SCENE]}/assets/data"
        _assert_signed(await client.sign(href, ttl_seconds=60), world.server.http_url, f"/v1/{href}", 60)
        with pytest.raises(NotFound):
            await client.sign(f"items/{world.items[SCENE]}/assets/nope")


def test_sign_refuses_what_the_download_refuses(client, world):
    beta_item = next(iter(world.beta_items.values()))
    with pytest.raises(PermissionDenied) as other:
        client.sign(f"items/{beta_item}/assets/data")
    assert other.value.reason == "PROJECT_ACCESS_DENIED"
    with pytest.raises(NotFound) as missing:
        client.sign(f"items/{world.items[SCENE]}/assets/nope")
    assert missing.value.reason == "ASSET_NOT_FOUND"
    for ttl in (-1, 604_801):
        with pytest.raises(InvalidArgument) as bad:
            client.sign(f"items/{world.items[SCENE]}/assets/data", ttl_seconds=ttl)
        assert bad.value.reason == "INVALID_TTL"
    narrow = world.make_token(scopes=["credits:read"], projects=["alpha"])
    with Client(world.server.address, narrow, retries=FAST_RETRIES) as limited:
        with pytest.raises(PermissionDenied) as scope:
            limited.sign(f"items/{world.items[SCENE]}/assets/data")
    assert scope.value.reason == "MISSING_SCOPE"
