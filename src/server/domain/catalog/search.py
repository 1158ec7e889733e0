"""Searching items: of one project (items.list) or several (the STAC API's
collections), by collection, ids, bbox, time range and footprint."""

from __future__ import annotations

import asyncio
from typing import Any

from shapely.geometry import shape

from geopera_kernel.raster.geo import parse_area
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.reads import CatalogReads
from geopera_kernel.server.domain.models import ItemQuery, ItemRecord
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.pagination import decode_page_token, encode_page_token, page_size_or_default
from geopera_kernel.server.store import Q


class CatalogSearch(CatalogReads):
    async def list_items(self, principal: Principal, query: ItemQuery) -> tuple[list[ItemRecord], str]:
        project_ids = sorted(set(query.project_ids)) or ([query.project_id] if query.project_id else [])
        if not project_ids:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        for project_id in project_ids:
            principal.require_project(project_id)
        item_ids = sorted(set(query.item_ids)) or None
        limit = page_size_or_default(query.page_size)
        bbox = query.bbox
        if bbox is not None:
            west, south, east, north = bbox
            if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
                raise invalid_argument(
                    "INVALID_BBOX",
                    "bbox must be [west, south, east, north] in degrees with west <= east and south <= north",
                    field="bbox",
                )
        if query.datetime_start and query.datetime_end and query.datetime_start >= query.datetime_end:
            raise invalid_argument(
                "INVALID_TIME_RANGE", "datetime_start must be before datetime_end", field="datetime_end"
            )
        # Geometry work on client input runs off the event loop (a large polygon takes a while).
        area = await asyncio.to_thread(parse_area, query.intersects, "intersects") if query.intersects else None
        filters = {
            "op": "items.list",
            "project_id": query.project_id,
            "project_ids": project_ids,
            "item_ids": item_ids,
            "collection_id": query.collection_id,
            "bbox": bbox,
            "start": query.datetime_start.isoformat() if query.datetime_start else None,
            "end": query.datetime_end.isoformat() if query.datetime_end else None,
            "intersects": area.wkb_hex if area is not None else None,
        }
        cursor = decode_page_token(query.page_token, filters)
        # The SQL filters by bbox (the intersection of `bbox` and the area's
        # bounds); the exact footprint test runs here, fetching further rows
        # until the page is full so pages never come back short.
        sql_bbox = bbox
        if area is not None:
            bounds = area.bounds
            sql_bbox = (
                bounds
                if sql_bbox is None
                else (
                    max(bounds[0], sql_bbox[0]),
                    max(bounds[1], sql_bbox[1]),
                    min(bounds[2], sql_bbox[2]),
                    min(bounds[3], sql_bbox[3]),
                )
            )
        if sql_bbox is not None and (sql_bbox[0] > sql_bbox[2] or sql_bbox[1] > sql_bbox[3]):
            return [], ""
        params = {
            "project_ids": project_ids,
            "item_ids": item_ids,
            "collection_id": query.collection_id,
            "west": sql_bbox[0] if sql_bbox else None,
            "south": sql_bbox[1] if sql_bbox else None,
            "east": sql_bbox[2] if sql_bbox else None,
            "north": sql_bbox[3] if sql_bbox else None,
            "datetime_start": query.datetime_start,
            "datetime_end": query.datetime_end,
            "after_datetime": cursor["datetime"] if cursor else None,
            "after_id": cursor["id"] if cursor else None,
            "limit": limit + 1,
        }
        items: list[ItemRecord] = []
        async with self._db.connection() as conn:
            while len(items) <= limit:
                rows = await (await conn.execute(Q.list_items, params)).fetchall()
                records = [ItemRecord.from_row(row) for row in rows]
                if area is not None:
                    records = await asyncio.to_thread(_intersecting, area, records)
                items += records
                if len(rows) <= limit or area is None:
                    break
                params["after_datetime"], params["after_id"] = rows[-1]["datetime"], rows[-1]["id"]
        next_token = ""
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_token = encode_page_token({"datetime": last.datetime.isoformat(), "id": last.id}, filters)
        return items, next_token


def _intersecting(area: Any, records: list[ItemRecord]) -> list[ItemRecord]:
    return [record for record in records if area.intersects(shape(record.geometry))]
