"""What the STAC API tests share: a world with two more items far from the
Slovenian samples (so bbox, time and footprint filters have something to tell
apart), tokens without the catalogue scope, HTTP and pystac-client helpers, and
the STAC 1.0.0 schemas for stac-validator as local files (no network)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pystac_client import Client

from geopera_kernel.raster.cog import write_cog
from geopera_kernel.server.demo import SYSTEM
from geopera_kernel.server.domain.models import AssetInput, ItemCreate

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas" / "v1.0.0"
STAC_SCHEMA_URL = "https://schemas.stacspec.org/v1.0.0/"
# Two items far from the Slovenian samples, in 2020 and 2021: bbox, time and
# footprint filters then have something to tell apart.
ELSEWHERE = {
    "elsewhere_2020": datetime(2020, 5, 1, 12, tzinfo=UTC),
    "elsewhere_2021": datetime(2021, 5, 1, 12, tzinfo=UTC),
}
ELSEWHERE_BOX = (10.0, 50.0, 10.01, 50.01)


def schema_map() -> dict[str, str]:
    """Every schema the STAC 1.0.0 core schemas refer to, as a local file."""
    import jsonschema_specifications
    import pystac

    mapping = {STAC_SCHEMA_URL + str(p.relative_to(SCHEMAS)): str(p) for p in SCHEMAS.rglob("*.json")}
    geojson = Path(pystac.__file__).parent / "validation" / "jsonschemas" / "geojson"
    for name in ("Feature", "Geometry"):
        mapping[f"https://geojson.org/schema/{name}.json"] = str(geojson / f"{name}.json")
    draft7 = Path(jsonschema_specifications.__file__).parent / "schemas" / "draft7" / "metaschema.json"
    mapping["http://json-schema.org/draft-07/schema"] = str(draft7)
    return mapping


def _add_elsewhere_items(world, folder: Path) -> None:
    west, south, east, north = ELSEWHERE_BOX
    path = folder / "elsewhere.tif"
    write_cog(
        path,
        np.arange(64 * 64, dtype=np.uint16).reshape(64, 64),
        crs="EPSG:4326",
        transform=((east - west) / 64, 0.0, west, 0.0, -(north - south) / 64, north),
        nodata=None,
        descriptions=["value"],
    )

    async def add(services: Any) -> None:
        for name, when in ELSEWHERE.items():
            spec = ItemCreate(
                project_id="alpha", collection_id="elsewhere", name=name, datetime=when, properties={"note": name},
                assets=[AssetInput("data", "", str(path), ["data"], "elsewhere.tif")], convert_to_cog=False,
            )  # fmt: skip
            world.items[name] = (await services.catalog.create_item(SYSTEM, spec)).id

    world.with_services(add)


@pytest.fixture(scope="module")
def stac_world(world, tmp_path_factory):
    _add_elsewhere_items(world, tmp_path_factory.mktemp("stac"))
    world.tokens["no_catalog"] = world.make_token(scopes=["processing:read"], projects=["alpha"])
    world.tokens["reader"] = world.make_token(scopes=["catalog:read"], projects=["alpha"])
    return world


def http(world, path: str, token: str | None = "alpha", *, body: Any = None, raw: bytes | None = None):
    """(status, JSON body, headers) of a GET, or of a POST when a body is given."""
    url = path if path.startswith("http") else world.server.http_url + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def stac_client(world, token: str = "alpha") -> Client:
    return Client.open(world.server.http_url + "/v1/stac", headers={"Authorization": f"Bearer {world.tokens[token]}"})


def catalogue(world, project: str = "alpha") -> dict[str, dict[str, Any]]:
    """Every item of a project as items.list answers it (the full view), by id."""
    status, body, _ = http(world, "/v1/op/items.list", project, body={"project_id": project, "view": "ITEM_VIEW_FULL"})
    assert status == 200, body
    return {item["id"]: item for item in body["items"]}


def when(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["datetime"].replace("Z", "+00:00"))


FAR_POLYGON = {"type": "Polygon", "coordinates": [[[9.99, 49.99], [10.02, 49.99], [10.02, 50.02], [9.99, 49.99]]]}
