"""Item rows: the names they may take, and inserting an item with its assets
(inside the caller's transaction; item creation and job outputs both do)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.raster import RasterInfo
from geopera_kernel.server.domain.catalog.raster_info import asset_json
from geopera_kernel.server.domain.models import ItemFields, ItemRecord
from geopera_kernel.server.errors import already_exists
from geopera_kernel.server.store import Q

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class NewItem(ItemFields):
    """An item to insert (by item creation, or as a job's output)."""

    job_id: str | None = None


@dataclass(frozen=True)
class StoredAsset:
    """An inspected asset already copied into storage under `storage_key`."""

    key: str
    roles: list[str]
    title: str
    storage_key: str
    info: RasterInfo


async def insert_item(conn: psycopg.AsyncConnection[Any], item: NewItem, assets: list[StoredAsset]) -> ItemRecord:
    """Insert an item and its assets (inside the caller's transaction)."""
    west, south, east, north = item.bbox
    try:
        async with conn.transaction():
            await conn.execute(
                Q.ensure_collection, {"project_id": item.project_id, "collection_id": item.collection_id}
            )
            await conn.execute(
                Q.insert_item,
                {
                    "id": item.id,
                    "project_id": item.project_id,
                    "collection_id": item.collection_id,
                    "name": item.name,
                    "geometry": Jsonb(item.geometry),
                    "bbox_west": west,
                    "bbox_south": south,
                    "bbox_east": east,
                    "bbox_north": north,
                    "datetime": item.datetime,
                    "properties": Jsonb(item.properties),
                    "job_id": item.job_id,
                },
            )
            for asset in assets:
                bands, grid, render = asset_json(asset.info)
                await conn.execute(
                    Q.insert_asset,
                    {
                        "item_id": item.id,
                        "key": asset.key,
                        "storage_key": asset.storage_key,
                        "media_type": asset.info.media_type,
                        "title": asset.title,
                        "roles": asset.roles or ["data"],
                        "size_bytes": asset.info.size_bytes,
                        "sha256": asset.info.sha256,
                        "bands": Jsonb(bands),
                        "grid": Jsonb(grid),
                        "render": Jsonb(render),
                    },
                )
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "items_name_key":
            raise already_exists(
                "ITEM_NAME_TAKEN", f"collection {item.collection_id!r} already has an item named {item.name!r}"
            ) from exc
        raise
    row = await (await conn.execute(Q.get_item, {"id": item.id})).fetchone()
    assert row is not None
    return ItemRecord.from_row(row)


def asset_storage_key(project_id: str, item_id: str, asset_key: str) -> str:
    return f"projects/{project_id}/items/{item_id}/{asset_key}.tif"
