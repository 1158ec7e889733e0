"""Reading items, by id: item records and their wire encodings, from memory,
else the database, and the state every part of the catalog service shares."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from geopera_kernel.server import callstats
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.batching import BatchLoader
from geopera_kernel.server.domain.catalog.caches import (
    ASSET_FILE_CACHE_SIZE,
    ITEM_CACHE_BYTES,
    ITEM_CACHE_SIZE,
    RENDER_BATCH_MAX,
    RENDER_BATCHES_IN_FLIGHT,
    ByteBudgetLru,
    ItemRenderer,
    LruCache,
    RenderedItem,
    rendered_size,
)
from geopera_kernel.server.domain.credits import CreditService
from geopera_kernel.server.domain.models import FileRef, ItemRecord
from geopera_kernel.server.domain.quota import StorageQuota
from geopera_kernel.server.domain.raster_work import RasterWorkPool
from geopera_kernel.server.errors import invalid_argument, not_found
from geopera_kernel.server.storage import BlobStorage
from geopera_kernel.server.store import Database, Q


@dataclass(frozen=True)
class CatalogLimits:
    max_upload_bytes: int = 4 << 30
    max_chunk_bytes: int = 4 << 20


class CatalogReads:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        limits: CatalogLimits | None = None,
        quota: StorageQuota | None = None,
        raster_pool: RasterWorkPool | None = None,
        renderer: ItemRenderer | None = None,
        item_cache_bytes: int = ITEM_CACHE_BYTES,
    ) -> None:
        self._db = db
        self._renderer = renderer
        self._storage = storage
        self._credits = CreditService(db)
        self.limits = limits or CatalogLimits()
        self.quota = quota or StorageQuota()
        self._raster_pool = raster_pool or RasterWorkPool()
        # Items never change once registered: see caches.py.
        self._items: LruCache[ItemRecord] = LruCache(ITEM_CACHE_SIZE)
        # (owning project, file) of assets by resource name: downloads.py.
        self._asset_files: LruCache[tuple[str, FileRef]] = LruCache(ASSET_FILE_CACHE_SIZE)
        self._rendered: ByteBudgetLru[RenderedItem] = ByteBudgetLru(item_cache_bytes, rendered_size)
        self._render_loader: BatchLoader[RenderedItem] = BatchLoader(
            self._load_renders, max_batch=RENDER_BATCH_MAX, max_in_flight=RENDER_BATCHES_IN_FLIGHT
        )

    async def get_item(self, principal: Principal, item_id: str) -> ItemRecord:
        if not item_id:
            raise invalid_argument("ITEM_ID_REQUIRED", "item_id is required", field="item_id")
        record = self._items.get(item_id)
        callstats.cache_lookup("item", record is not None)
        if record is None:
            record = await self._fetch_item(item_id)
        principal.require_project(record.project_id)
        return record

    async def _fetch_item(self, item_id: str) -> ItemRecord:
        async with self._db.connection() as conn:
            return await self._read_item(conn, item_id)

    async def _read_item(self, conn: psycopg.AsyncConnection[Any], item_id: str) -> ItemRecord:
        row = await (await conn.execute(Q.get_item, {"id": item_id})).fetchone()
        if row is None:
            raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
        return self._items.put(item_id, ItemRecord.from_row(row))

    async def get_item_rendered(self, principal: Principal, item_id: str) -> bytes:
        """An item in the injected renderer's encoding (items.get): from memory,
        else its stored render, else rendered from its rows and stored for every
        later read. Misses of concurrent calls share one batched lookup (see
        `_load_renders`); each call then checks its own caller's access."""
        if not item_id:
            raise invalid_argument("ITEM_ID_REQUIRED", "item_id is required", field="item_id")
        rendered = self._rendered.get(item_id)
        callstats.cache_lookup("item", rendered is not None)
        if rendered is None:
            loaded = await self._render_loader.load(item_id)
            callstats.database_used(loaded.seconds, batch=loaded.batch_size)
            rendered = loaded.value
            if rendered is None:
                raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
            callstats.cache_lookup("item_render", rendered.stored)
            self._rendered.put(item_id, rendered)
        principal.require_project(rendered.project_id)
        return rendered.body

    async def _load_renders(self, item_ids: list[str]) -> tuple[dict[str, RenderedItem], float]:
        """The renders of `item_ids` that exist, on one connection: one lookup of
        the stored ones; the others (their first read ever) built from their rows
        in one query and stored in one statement. No access check here: the batch
        serves many callers, and each checks its own (get_item_rendered)."""
        renderer = self._renderer
        if renderer is None:
            raise RuntimeError("CatalogService was built without an item renderer")
        async with self._db.connection() as conn:
            held = time.perf_counter()
            # Binary results: bytea arrives as bytes, not hex to decode.
            cur = await conn.execute(Q.get_item_renders, {"ids": item_ids, "render_key": renderer.key}, binary=True)
            found = {row["item_id"]: RenderedItem(row["project_id"], row["body"]) for row in await cur.fetchall()}
            missing = [item_id for item_id in item_ids if item_id not in found]
            if missing:
                rows = await (await conn.execute(Q.get_items, {"ids": missing})).fetchall()
                built: list[tuple[str, RenderedItem]] = []
                for row in rows:
                    record = self._items.put(row["id"], ItemRecord.from_row(row))
                    built.append((record.id, RenderedItem(record.project_id, renderer.render(record), stored=False)))
                    await asyncio.sleep(0)  # a conversion takes ~1 ms: let other calls run between them
                if built:
                    await conn.execute(
                        Q.put_item_renders,
                        {
                            "render_key": renderer.key,
                            "ids": [item_id for item_id, _ in built],
                            "project_ids": [r.project_id for _, r in built],
                            "bodies": [r.body for _, r in built],
                        },
                    )
                    found.update(built)
            return found, time.perf_counter() - held
