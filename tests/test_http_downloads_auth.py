"""Who may download over HTTP: bearer tokens under `DownloadAsset`'s rules,
signed URLs from `assets.sign` (no header; expired, forged, altered or
foreign ones refused 403 with the error JSON; a rotated-out key still
verifies while listed), and GDAL `/vsicurl/` reading a COG window through a
signed URL, against a real server."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import grpc
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geopera.v1 import catalog_pb2
from tests.conftest import World, seed_world, stop_world
from tests.support.client import RpcFailure
from tests.support.http_downloads import (
    FIRST,
    OLD_KEY,
    SIGNING_ENV,
    downloads_world,
    fetch,
    local_signer,
    make_artifact,
    sign,
    stored_path,
)
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    yield from downloads_world(database_factory.create(), tmp_path_factory.mktemp("http-downloads-auth"))


@pytest.fixture(scope="module")
def names(world):
    """Resource names: alpha's asset, beta's asset, alpha's artifact."""
    return {
        "alpha": f"items/{world.items[FIRST]}/assets/data",
        "beta": f"items/{world.beta_items[FIRST]}/assets/data",
        "artifact": f"artifacts/{make_artifact(world)}",
    }


def url_of(world, name: str) -> str:
    return f"{world.server.http_url}/v1/{name}"


def refused(answer, status: int, reason: str) -> None:
    assert answer.status == status, answer.body[:300]
    body = answer.json()
    assert body["reason"] == reason and body["message"] and body["request_id"] == answer.headers["X-Request-Id"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("resource", "who", "status", "reason"),
    [
        ("alpha", None, 401, "UNAUTHENTICATED"),
        ("alpha", "gpk_" + "x" * 43, 401, "UNAUTHENTICATED"),
        ("beta", "alpha", 403, "PROJECT_ACCESS_DENIED"),
        ("artifact", "beta", 403, "PROJECT_ACCESS_DENIED"),
        ("alpha", "no_catalog", 403, "MISSING_SCOPE"),
        ("artifact", "no_analytics", 403, "MISSING_SCOPE"),
        ("alpha", "worker", 403, "MISSING_SCOPE"),
    ],
)
def test_bearer_refusals_follow_download_asset(world, names, method, resource, who, status, reason):
    tokens = {
        "no_catalog": lambda: world.make_token(scopes=["analytics:read"], projects=["alpha"]),
        "no_analytics": lambda: world.make_token(scopes=["catalog:read"], projects=["alpha"]),
    }
    token = tokens[who]() if who in tokens else world.tokens.get(who, who) if who else None
    answer = fetch(url_of(world, names[resource]), method=method, token=token)
    if method == "HEAD":
        assert (answer.status, answer.body) == (status, b"")
    else:
        refused(answer, status, reason)
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("resource", "who"), [("alpha", "alpha"), ("beta", "beta"), ("artifact", "alpha"),
                                               ("beta", "admin")])  # fmt: skip
def test_bearer_members_and_admins_download(world, names, resource, who):
    answer = fetch(url_of(world, names[resource]), token=world.tokens[who])
    assert answer.status == 200 and answer.body == stored_path(world, names[resource]).read_bytes()


@pytest.mark.parametrize(
    ("path", "reason"),
    [("items/it_missing/assets/data", "ITEM_NOT_FOUND"), ("artifacts/art_missing", "ARTIFACT_NOT_FOUND")],
)
def test_missing_resources_are_404(world, path, reason):
    refused(fetch(url_of(world, path), token=world.tokens["alpha"]), 404, reason)


def test_a_missing_asset_key_is_404(world, names):
    refused(fetch(url_of(world, names["alpha"]) + "x", token=world.tokens["alpha"]), 404, "ASSET_NOT_FOUND")


@pytest.mark.parametrize("resource", ["alpha", "artifact"])
def test_a_signed_url_downloads_with_no_header(world, names, resource):
    before = time.time()
    signed = sign(world, names[resource], ttl_seconds=600)
    assert signed.url.startswith(url_of(world, names[resource]) + "?")
    assert before + 599 <= signed.expire_time.seconds <= time.time() + 601
    data = stored_path(world, names[resource]).read_bytes()
    assert fetch(signed.url).body == data
    head = fetch(signed.url, method="HEAD")
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(data)))
    ranged = fetch(signed.url, headers={"Range": "bytes=100-199"})
    assert (ranged.status, ranged.body) == (206, data[100:200])
    assert "max-age" in ranged.headers["Cache-Control"]
    # The signature decides, whatever header comes with it.
    assert fetch(signed.url, token="gpk_" + "x" * 43).status == 200


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **changes}
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


def test_expired_forged_and_altered_urls_are_refused(world, names):
    signed = sign(world, names["alpha"]).url
    signature = dict(parse_qsl(urlsplit(signed).query))["signature"]
    forged = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(fetch(_with(signed, signature=forged)), 403, "SIGNATURE_INVALID")
    refused(fetch(_with(signed, expires=str(int(time.time()) + 10**6))), 403, "SIGNATURE_INVALID")
    refused(fetch(_with(signed, key="old")), 403, "SIGNATURE_INVALID")
    refused(fetch(_with(signed, key="nobody")), 403, "SIGNATURE_INVALID")
    # The same signature on another resource (beta's item, an asset under another key).
    refused(fetch(signed.replace(world.items[FIRST], world.beta_items[FIRST])), 403, "SIGNATURE_INVALID")
    refused(fetch(signed.replace("/assets/data?", "/assets/datb?")), 403, "SIGNATURE_INVALID")
    # Signed by the server's own key, but long ago.
    path = "/v1/" + names["alpha"]
    query, _ = local_signer().sign(path, 1, now=time.time() - 60)
    refused(fetch(f"{world.server.http_url}{path}?{urlencode(query)}"), 403, "SIGNATURE_EXPIRED")
    refused(fetch(f"{world.server.http_url}{path}?signature=x"), 403, "SIGNATURE_INVALID")
    # An unknown server's signature.
    query, _ = local_signer("new:a-secret-the-server-never-saw").sign(path, 60)
    refused(fetch(f"{world.server.http_url}{path}?{urlencode(query)}"), 403, "SIGNATURE_INVALID")


def test_a_url_signed_with_a_rotated_out_key_still_works(world, names):
    path = "/v1/" + names["alpha"]
    query, _ = local_signer(OLD_KEY).sign(path, 60)
    answer = fetch(f"{world.server.http_url}{path}?{urlencode(query)}")
    assert answer.status == 200 and answer.body == stored_path(world, names["alpha"]).read_bytes()


def _sign_fails(world, name: str, token: str, ttl: int = 0) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        sign(world, name, token, ttl)
    return info.value


def test_assets_sign_checks_what_the_download_checks(world, names):
    failure = _sign_fails(world, names["beta"], "alpha")
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")
    failure = _sign_fails(world, names["artifact"], world.make_token(scopes=["catalog:read"], projects=["alpha"]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    failure = _sign_fails(world, names["alpha"], world.make_token(scopes=["analytics:read"], projects=["alpha"]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    failure = _sign_fails(world, "items/it_missing/assets/data", "alpha")
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND")
    failure = _sign_fails(world, "nonsense", "alpha")
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME")
    for ttl in (-1, 7 * 86400 + 1):
        failure = _sign_fails(world, names["alpha"], "alpha", ttl)
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TTL")
    default = sign(world, names["alpha"])
    assert abs(default.expire_time.seconds - (time.time() + 3600)) < 60


@pytest.fixture(scope="module")
def tiled_item(world, tmp_path_factory):
    """Resource name of a 2048 x 2048 COG of noise (its 512 x 512 tiles barely
    compress, so the tiles of a window lie apart in the file)."""
    path = tmp_path_factory.mktemp("tiled") / "noise.tif"
    data = np.random.default_rng(7).integers(1, 60000, (1, 2048, 2048), dtype=np.uint16)
    profile = {"driver": "GTiff", "width": 2048, "height": 2048, "count": 1, "dtype": "uint16", "crs": "EPSG:32633",
               "transform": rasterio.Affine(10, 0, 400000, 0, -10, 5200000)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    upload = world.client("alpha").upload("alpha", path.read_bytes(), chunk=1 << 20)
    asset = catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)
    params = catalog_pb2.ItemsCreateParams(
        project_id="alpha", collection_id="noise", name="noise_20240101", assets=[asset], convert_to_cog=True
    )
    created = world.client("alpha").execute("items.create", params, timeout=120)
    return f"items/{created.item.id}/assets/data"  # type: ignore[attr-defined]


@pytest.mark.parametrize("multirange", ["PARALLEL", "SERIAL", "SINGLE_GET"])
def test_gdal_vsicurl_reads_windows_through_a_signed_url(world, names, tiled_item, multirange):
    """GDAL's ways of asking for a window's tiles (GDAL_HTTP_MULTIRANGE): PARALLEL (its
    default) and SERIAL one range a request, SINGLE_GET every range in one request,
    answered multipart/byteranges."""
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_USE_HEAD": "NO", "GDAL_HTTP_MAX_RETRY": "0",
           "GDAL_HTTP_MULTIRANGE": multirange, "VSI_CACHE": "FALSE"}  # fmt: skip
    for name, window in ((names["alpha"], Window(13, 7, 40, 30)), (tiled_item, Window(600, 600, 600, 600))):
        url = sign(world, name).url
        with rasterio.Env(**env, CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{url}"):
            with rasterio.open(f"/vsicurl/{url}") as remote:
                got = remote.read(window=window)
                overview = remote.read(1, out_shape=(remote.height // 4, remote.width // 4))
                profile = (remote.crs, remote.transform, remote.count, remote.dtypes)
        with rasterio.open(stored_path(world, name)) as local:
            assert profile == (local.crs, local.transform, local.count, local.dtypes)
            np.testing.assert_array_equal(got, local.read(window=window))
            np.testing.assert_array_equal(overview, local.read(1, out_shape=(local.height // 4, local.width // 4)))
    ranges = [json.loads(line).get("range", "") for line in world.server.log().splitlines() if '"range"' in line]
    if multirange == "SINGLE_GET":
        assert any("," in r for r in ranges), ranges[-20:]


def test_gdal_vsicurl_without_a_signature_is_refused(world, names):
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="0"):
        with pytest.raises(rasterio.errors.RasterioIOError):
            rasterio.open(f"/vsicurl/{url_of(world, names['alpha'])}")


def test_signed_urls_use_the_public_url_and_need_one(database_factory, tmp_path_factory):
    """Behind a proxy the URL names GEOPERA_PUBLIC_URL; with HTTP off and none
    set there is nothing to sign for (FAILED_PRECONDITION HTTP_OFF)."""
    url, home = database_factory.create(), tmp_path_factory.mktemp("public-url")
    env = {**SIGNING_ENV, "GEOPERA_PUBLIC_URL": "https://geo.example.com/"}
    server = ServerProcess(database_url=url, home=home, extra_env=env, http_listen="off").start()
    world = World(server=server, database_url=url, home=home)
    try:
        asyncio.run(seed_world(world))
        world.channel = server.channel()
        name = f"items/{world.items[FIRST]}/assets/data"
        signed = sign(world, name)
        assert signed.url.startswith(f"https://geo.example.com/v1/{name}?expires=")
        world.channel.close()
        server.stop()
        server = world.server = ServerProcess(database_url=url, home=home, extra_env=SIGNING_ENV, http_listen="off")
        server.start()
        world.channel = server.channel()
        failure = _sign_fails(world, name, "alpha")
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HTTP_OFF")
    finally:
        stop_world(world)


def test_a_remembered_asset_still_checks_each_caller(world, names):
    """The second read of an asset skips the database, never the project check."""
    url = url_of(world, names["alpha"])
    assert fetch(url, token=world.tokens["alpha"]).status == 200
    refused(fetch(url, token=world.tokens["beta"]), 403, "PROJECT_ACCESS_DENIED")
    refused(fetch(url, token=world.make_token(scopes=["analytics:read"], projects=["alpha"])), 403, "MISSING_SCOPE")


def test_a_prefix_grant_opens_what_is_under_it_only(world, names):
    """The grant tile URL templates use: one signature for every path under a prefix."""
    prefix = f"/v1/items/{world.items[FIRST]}/assets/"
    query, _ = local_signer().signed_query(prefix, 60, prefix=True)
    assert fetch(f"{world.server.http_url}{prefix}data?{query}").status == 200
    other = f"/v1/items/{world.beta_items[FIRST]}/assets/data"
    refused(fetch(f"{world.server.http_url}{other}?{query}"), 403, "SIGNATURE_INVALID")
    refused(fetch(f"{world.server.http_url}/v1/{names['artifact']}?{query}"), 403, "SIGNATURE_INVALID")


def test_access_helpers_check_as_the_operations_do(world, names):
    """`Access.item`, `asset_file` and `artifact_file`, which every resource route
    (tiles, STAC) uses: the caller's scope and project, or a signature's reader."""
    from geopera_kernel.server.edge.call import CallInfo
    from geopera_kernel.server.errors import DomainError
    from geopera_kernel.server.rest.access import SIGNED_URL_READER, Access

    alpha_item, beta_item = world.items[FIRST], world.beta_items[FIRST]
    artifact_id = names["artifact"].removeprefix("artifacts/")
    analytics_only = world.make_token(scopes=["analytics:read"], projects=["alpha"])

    async def check(services):
        async def principal(token: str):
            return await services.tokens.authenticate(f"Bearer {token}")

        def access(who):
            return Access(who, CallInfo("test", "req_test"), services)

        alpha = access(await principal(world.tokens["alpha"]))
        assert (await alpha.item(alpha_item)).id == alpha_item
        assert (await alpha.asset_file(alpha_item, "data")).sha256
        assert (await alpha.artifact_file(artifact_id)).size_bytes > 0
        signed = access(SIGNED_URL_READER)
        assert (await signed.item(beta_item)).id == beta_item
        reasons = []
        no_catalog = access(await principal(analytics_only))
        for attempt in (alpha.item(beta_item), alpha.asset_file(beta_item, "data"), no_catalog.item(alpha_item),
                        access(await principal(world.tokens["beta"])).artifact_file(artifact_id)):  # fmt: skip
            try:
                await attempt
            except DomainError as err:
                reasons.append(err.reason)
        return reasons

    assert world.with_services(check) == [
        "PROJECT_ACCESS_DENIED", "PROJECT_ACCESS_DENIED", "MISSING_SCOPE", "PROJECT_ACCESS_DENIED",
    ]  # fmt: skip
