"""A seeded world for the HTTP download tests: a server holding two signing
keys (`new` signs, `old` still verifies), an analytics artifact, and plain
HTTP helpers that return whatever the server answers (errors included)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import struct_pb2

from geopera.v1 import analytics_pb2, catalog_pb2
from geopera_kernel.server.signing import UrlSigner, parse_signing_keys
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world

NEW_KEY = "new:fresh-secret-0123456789abcdef"
OLD_KEY = "old:older-secret-0123456789abcdef"
SIGNING_ENV = {**TEST_SERVER_ENV, "GEOPERA_SIGNING_KEYS": f"{NEW_KEY},{OLD_KEY}"}
FIRST = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


def fetch(url: str, *, method: str = "GET", token: str | None = None, headers: dict[str, str] | None = None,
          connection: http.client.HTTPConnection | None = None) -> Answer:  # fmt: skip
    """One request; `connection` reuses a keep-alive connection (as GDAL does)."""
    parts = urlsplit(url)
    conn = connection or http.client.HTTPConnection(parts.netloc, timeout=60)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=sent)
    response = conn.getresponse()
    answer = Answer(response.status, response.headers, response.read())
    if connection is None:
        conn.close()
    return answer


def stored_path(world: World, resource_name: str) -> Path:
    """Where the server keeps the bytes of `resource_name`."""
    from geopera_kernel.server.demo import SYSTEM

    async def find(services: Any) -> str:
        ref = await services.catalog.asset_file(SYSTEM, resource_name)
        return services.storage.local_path(ref.storage_key)

    return Path(world.with_services(find))


def sign(world: World, resource_name: str, token: str = "alpha", ttl_seconds: int = 0) -> catalog_pb2.AssetsSignResult:
    params = catalog_pb2.AssetsSignParams(resource_name=resource_name, ttl_seconds=ttl_seconds)
    return world.client(token).execute("assets.sign", params)  # type: ignore[return-value]


def local_signer(key: str = NEW_KEY) -> UrlSigner:
    return UrlSigner(parse_signing_keys(key))


def make_artifact(world: World) -> str:
    """The id of a change-detection difference COG of project alpha."""
    params = struct_pb2.Struct()
    params.update({
        "before_item_id": world.items[FIRST], "after_item_id": world.items["s2l1c_slovenia_20150909_bgrn"],
        "index_name": "NDVI", "change_threshold": 0.05, "geometry": AOI,
    })  # fmt: skip
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=params), 120
    )
    return next(o.id for o in result.outputs if o.key == "difference_cog")  # type: ignore[attr-defined]


def downloads_world(database_url: str, home: Path) -> Iterator[World]:
    world = start_seeded_world(database_url, home, SIGNING_ENV)
    try:
        yield world
    finally:
        stop_world(world)
