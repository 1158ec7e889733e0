"""Projects, items, assets and uploads."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from shapely.geometry import shape

from raster import (
    CONVERSION_DRIVERS,
    GEOTIFF_DRIVERS,
    NOT_A_COG,
    RasterError,
    RasterInfo,
    convert_to_cog,
    datetime_from_name,
    inspect_raster,
)
from raster.geo import parse_area
from server import callstats
from server.auth import Principal
from server.config import DEFAULT_ITEM_CACHE_BYTES
from server.domain.batching import BatchLoader
from server.domain.models import (
    AssetInput,
    FileRef,
    ItemCreate,
    ItemQuery,
    ItemRecord,
    ProjectRecord,
    UploadPart,
    UploadRecord,
)
from server.domain.pending_objects import PendingObjects, surely_rolled_back
from server.domain.quota import StorageQuota, quota_exceeded
from server.domain.raster_work import RasterWorkPool
from server.errors import (
    Code,
    DomainError,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)
from server.ids import new_id
from server.pagination import decode_page_token, encode_page_token, page_size_or_default
from server.storage import BlobStorage
from server.store import CommitProbe, Database, Q
from server.validation import require_finite_json

log = logging.getLogger(__name__)

# Stands in for a job token whose read of a source item was allowed above.
SOURCE_READER = Principal(id="job-source-reader", kind="admin", scopes=frozenset({"admin"}))
ASSET_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_NAME_LENGTH = 200
UPLOAD_TTL_SECONDS = 24 * 3600
ARTIFACT_RESOURCE = re.compile(r"^artifacts/(?P<artifact_id>[^/]+)$")
ASSET_RESOURCE = re.compile(r"^items/(?P<item_id>[^/]+)/assets/(?P<key>[^/]+)$")
ITEM_CACHE_SIZE = 4096  # item records held in memory (get_item: jobs, analytics, clips)
# Memory for items held encoded (items.get), GEOPERA_ITEM_CACHE_BYTES.
ITEM_CACHE_BYTES = DEFAULT_ITEM_CACHE_BYTES
# What a cached encoding costs beside its body and id: the entry object, the
# bytes and str headers, the project id string and the LRU's hash slot and
# links (tracemalloc of a filled cache; tests/test_item_cache.py checks it).
RENDER_ENTRY_OVERHEAD_BYTES = 400
# items.get misses looked up in one query at most, and such queries out at once.
RENDER_BATCH_MAX = 128
RENDER_BATCHES_IN_FLIGHT = 2
V = TypeVar("V")


@dataclass(frozen=True)
class CatalogLimits:
    max_upload_bytes: int = 4 << 30
    max_chunk_bytes: int = 4 << 20


def _json_float(value: float | None) -> float | str | None:
    """JSON (and jsonb) has no NaN/Infinity; proto JSON spells them as strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def asset_json(info: RasterInfo) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Band, grid and render metadata as JSON shaped like the protos."""
    bands = []
    for band in info.bands:
        entry: dict[str, Any] = {
            "name": band.name,
            "common_name": band.common_name or "",
            "description": band.description,
            "data_type": band.data_type,
            "scale": band.scale,
            "offset": band.offset,
            "unit": band.unit or "",
            "sensor_band_id": band.sensor_band_id or "",
            "center_wavelength_um": band.center_wavelength_um or 0.0,
            "tags": dict(band.tags),
        }
        if band.nodata is not None:
            entry["nodata"] = _json_float(band.nodata)
        if band.statistics is not None:
            stats = band.statistics
            entry["statistics"] = {
                "minimum": _json_float(stats.minimum),
                "maximum": _json_float(stats.maximum),
                "mean": _json_float(stats.mean),
                "stddev": _json_float(stats.stddev),
                "valid_percent": _json_float(stats.valid_percent),
            }
        bands.append(entry)
    grid = info.grid
    grid_json = {
        "crs": grid.crs,
        "width": grid.width,
        "height": grid.height,
        "transform": list(grid.transform),
        "bounds": list(grid.bounds),
        "block_size": list(grid.block_size),
        "overview_count": grid.overview_count,
        "compression": grid.compression or "",
    }
    render = {
        "rescale": [{"min": _json_float(r.min), "max": _json_float(r.max)} for r in info.render_hint.rescale],
        "rgb_bands": list(info.render_hint.rgb_bands),
    }
    return bands, grid_json, render


def _raster_error(err: RasterError, field: str) -> DomainError:
    return invalid_argument(
        err.reason,
        err.message,
        violations=[],
        metadata={"findings": "; ".join(err.findings)[:1000]} if err.findings else {},
        field=field,
    )


def _discard_prepared(prepared: tuple[Path, RasterInfo, bool]) -> None:
    """Cleans up after an asset prepared for a call that was cancelled meanwhile."""
    path, _info, temporary = prepared
    if temporary:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class NewItem:
    id: str
    project_id: str
    collection_id: str
    name: str
    geometry: dict[str, Any]
    bbox: tuple[float, float, float, float]
    datetime: datetime
    properties: dict[str, Any]
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


def _intersecting(area: Any, records: list[ItemRecord]) -> list[ItemRecord]:
    return [record for record in records if area.intersects(shape(record.geometry))]


def asset_storage_key(project_id: str, item_id: str, asset_key: str) -> str:
    return f"projects/{project_id}/items/{item_id}/{asset_key}.tif"


class LruCache(Generic[V]):
    """A bounded LRU by item id, for what never changes once an item exists."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, V] = OrderedDict()

    def get(self, item_id: str) -> V | None:
        value = self._values.get(item_id)
        if value is not None:
            self._values.move_to_end(item_id)
        return value

    def put(self, item_id: str, value: V) -> V:
        self._values[item_id] = value
        if len(self._values) > self._capacity:
            self._values.popitem(last=False)
        return value


class ByteBudgetLru(Generic[V]):
    """A bounded LRU by item id that holds values up to a budget of bytes
    (`size` says what one costs), not up to a count: items vary in size (a
    band's statistics, many assets), memory does not."""

    def __init__(self, budget_bytes: int, size: Callable[[str, V], int]) -> None:
        self.budget_bytes = budget_bytes
        self._size = size
        self._values: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, item_id: str) -> V | None:
        entry = self._values.get(item_id)
        if entry is None:
            return None
        self._values.move_to_end(item_id)
        return entry[0]

    def put(self, item_id: str, value: V) -> V:
        old = self._values.pop(item_id, None)
        if old is not None:
            self.used_bytes -= old[1]
        cost = self._size(item_id, value)
        if cost > self.budget_bytes:
            return value  # larger than the whole budget: served, never held
        self._values[item_id] = (value, cost)
        self.used_bytes += cost
        while self.used_bytes > self.budget_bytes:
            _, (_, evicted) = self._values.popitem(last=False)
            self.used_bytes -= evicted
        return value


@dataclass(frozen=True)
class ItemRenderer:
    """How the transport encodes an item for the wire, injected by the
    composition root (the domain imports no generated code). `key` names the
    encoding: renders stored under another key are stale and written anew."""

    key: str
    render: Callable[[ItemRecord], bytes]


@dataclass(frozen=True, slots=True)
class RenderedItem:
    project_id: str
    body: bytes
    # Whether it came from its stored render (False: built from its rows now).
    stored: bool = True


def rendered_size(item_id: str, rendered: RenderedItem) -> int:
    return len(rendered.body) + len(item_id) + RENDER_ENTRY_OVERHEAD_BYTES


class CatalogService:
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
        self.limits = limits or CatalogLimits()
        self.quota = quota or StorageQuota()
        self._raster_pool = raster_pool or RasterWorkPool()
        # Items never change once registered (there is no update or delete),
        # so a read-through cache is always right, on every replica.
        self._items: LruCache[ItemRecord] = LruCache(ITEM_CACHE_SIZE)
        self._rendered: ByteBudgetLru[RenderedItem] = ByteBudgetLru(item_cache_bytes, rendered_size)
        self._render_loader: BatchLoader[RenderedItem] = BatchLoader(
            self._load_renders, max_batch=RENDER_BATCH_MAX, max_in_flight=RENDER_BATCHES_IN_FLIGHT
        )

    # -- projects ---------------------------------------------------------

    async def get_project(self, principal: Principal, project_id: str) -> ProjectRecord:
        principal.require_project(project_id)
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_project, {"id": project_id})).fetchone()
        if row is None:
            raise not_found("PROJECT_NOT_FOUND", f"project {project_id!r} does not exist")
        return ProjectRecord(**row)

    async def list_projects(
        self, principal: Principal, page_size: int, page_token: str
    ) -> tuple[list[ProjectRecord], str]:
        limit = page_size_or_default(page_size)
        cursor = decode_page_token(page_token, {"op": "projects.list"})
        member_ids = None if principal.is_admin else sorted(principal.project_ids)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                Q.list_projects,
                {"after_id": (cursor or {}).get("id", ""), "member_ids": member_ids, "limit": limit + 1},
            )
            rows = await cur.fetchall()
        projects = [ProjectRecord(**r) for r in rows[:limit]]
        next_token = encode_page_token({"id": projects[-1].id}, {"op": "projects.list"}) if len(rows) > limit else ""
        return projects, next_token

    async def create_project(self, project_id: str, display_name: str) -> ProjectRecord:
        try:
            async with self._db.transaction() as conn:
                row = await (
                    await conn.execute(Q.insert_project, {"id": project_id, "display_name": display_name})
                ).fetchone()
                await conn.execute(Q.insert_credit_account, {"project_id": project_id})
        except psycopg.errors.UniqueViolation as exc:
            raise already_exists("PROJECT_EXISTS", f"project {project_id!r} already exists") from exc
        except psycopg.errors.CheckViolation as exc:
            raise invalid_argument(
                "INVALID_PROJECT_ID",
                "project ids are 1-63 lower-case letters, digits, '-' or '_'",
                field="project_id",
            ) from exc
        assert row is not None
        return ProjectRecord(**row)

    # -- items ------------------------------------------------------------

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

    async def list_items(self, principal: Principal, query: ItemQuery) -> tuple[list[ItemRecord], str]:
        if not query.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(query.project_id)
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
            "project_id": query.project_id,
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

    def _validate_create(self, principal: Principal, spec: ItemCreate) -> None:
        if not spec.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(spec.project_id)
        if not spec.name or len(spec.name) > MAX_NAME_LENGTH or "/" in spec.name:
            raise invalid_argument(
                "INVALID_ITEM_NAME", f"name must be 1-{MAX_NAME_LENGTH} characters without '/'", field="name"
            )
        if not COLLECTION_ID.match(spec.collection_id):
            raise invalid_argument(
                "INVALID_COLLECTION_ID",
                "collection_id must be 1-63 letters, digits, '_', '.' or '-'",
                field="collection_id",
            )
        require_finite_json(spec.properties, "properties")
        if not spec.assets:
            raise invalid_argument("ASSETS_REQUIRED", "at least one asset is required", field="assets")
        seen: set[str] = set()
        for i, asset in enumerate(spec.assets):
            where = f"assets[{i}]"
            if not ASSET_KEY.match(asset.key):
                raise invalid_argument(
                    "INVALID_ASSET_KEY",
                    "asset keys are 1-63 lower-case letters, digits, '_' or '-'",
                    field=f"{where}.key",
                )
            if asset.key in seen:
                raise invalid_argument("DUPLICATE_ASSET_KEY", f"asset key {asset.key!r} repeats", field=where)
            seen.add(asset.key)
            if bool(asset.upload_id) == bool(asset.server_href):
                raise invalid_argument(
                    "ASSET_SOURCE_REQUIRED",
                    "give exactly one of upload_id and server_href",
                    field=where,
                )
            if asset.server_href and not principal.is_admin:
                raise permission_denied(
                    "SERVER_HREF_REQUIRES_ADMIN", "only admin tokens may register server-local files"
                )

    async def _source_path(self, spec: ItemCreate, index: int, asset: AssetInput) -> Path:
        if asset.server_href:
            raw = asset.server_href.removeprefix("file://")
            path = Path(raw)
            if not path.is_absolute() or not path.is_file():
                raise invalid_argument(
                    "SERVER_HREF_NOT_FOUND",
                    f"{asset.server_href!r} is not an existing absolute path on the server",
                    field=f"assets[{index}].server_href",
                )
            return path
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.lock_upload, {"id": asset.upload_id})).fetchone()
        if row is None or row["project_id"] != spec.project_id:
            raise not_found("UPLOAD_NOT_FOUND", f"no upload {asset.upload_id!r} in project {spec.project_id!r}")
        if row["consume_time"] is not None or row["expired"]:
            raise failed_precondition(
                "UPLOAD_NOT_AVAILABLE", f"upload {asset.upload_id!r} was already used or has expired"
            )
        return Path(row["staging_path"])

    def _prepare_asset(
        self, source: Path, convert: bool, field: str, check_cancelled: Callable[[], None]
    ) -> tuple[Path, RasterInfo, bool]:
        """Inspect (and if asked convert) one asset file. Runs on the raster pool.
        Returns the file to store, its metadata, and whether it is a temp file."""
        drivers = CONVERSION_DRIVERS if convert else GEOTIFF_DRIVERS
        try:
            return source, inspect_raster(source, drivers=drivers, check_cancelled=check_cancelled), False
        except RasterError as err:
            if not (convert and err.reason == NOT_A_COG):
                raise _raster_error(err, field) from err
        converted = self._storage.scratch_dir() / f"cog-{new_id('tmp')}.tif"
        try:
            convert_to_cog(source, converted, drivers=drivers, check_cancelled=check_cancelled)
            return converted, inspect_raster(converted, check_cancelled=check_cancelled), True
        except BaseException as err:
            converted.unlink(missing_ok=True)
            if isinstance(err, RasterError):
                raise _raster_error(err, field) from err
            raise

    async def create_item(self, principal: Principal, spec: ItemCreate) -> ItemRecord:
        self._validate_create(principal, spec)
        item_id = new_id("it")
        prepared: list[tuple[AssetInput, Path, RasterInfo, bool]] = []
        pending = PendingObjects(self._storage)
        try:
            for i, asset in enumerate(spec.assets):
                source = await self._source_path(spec, i, asset)
                path, info, temporary = await self._raster_pool.run(
                    functools.partial(self._prepare_asset, source, spec.convert_to_cog, f"assets[{i}]"),
                    discard=_discard_prepared,
                )
                prepared.append((asset, path, info, temporary))
            first = prepared[0][2]
            when = spec.datetime or first.datetime or datetime_from_name(spec.name)
            if when is None:
                raise invalid_argument(
                    "DATETIME_REQUIRED",
                    "no datetime given, none in the raster's tags, and no YYYYMMDD date in the name",
                    field="datetime",
                )
            for asset, path, _info, _ in prepared:
                await pending.put(asset_storage_key(spec.project_id, item_id, asset.key), path)
            record = await self._insert_item(spec, item_id, when, prepared, pending)
        except BaseException as error:
            await pending.settle(error)
            raise
        finally:
            for _, path, _, temporary in prepared:
                if temporary:
                    path.unlink(missing_ok=True)
        for asset in spec.assets:
            if asset.upload_id:
                await asyncio.to_thread(self._discard_staging, asset.upload_id)
        return record

    async def _insert_item(
        self,
        spec: ItemCreate,
        item_id: str,
        when: datetime,
        prepared: list[tuple[AssetInput, Path, RasterInfo, bool]],
        pending: PendingObjects,
    ) -> ItemRecord:
        first = prepared[0][2]
        item = NewItem(
            id=item_id,
            project_id=spec.project_id,
            collection_id=spec.collection_id,
            name=spec.name,
            geometry=first.footprint,
            bbox=first.bbox,
            datetime=when,
            properties=spec.properties,
        )
        assets = [
            StoredAsset(asset.key, asset.roles, asset.title, key, info)
            for (asset, _path, info, _), key in zip(prepared, pending.keys, strict=True)
        ]
        async with self._db.transaction(pending.probe) as conn:
            for asset, *_ in prepared:
                if asset.upload_id:
                    row = await (await conn.execute(Q.lock_upload, {"id": asset.upload_id})).fetchone()
                    if row is None or row["consume_time"] is not None:
                        raise failed_precondition(
                            "UPLOAD_NOT_AVAILABLE", f"upload {asset.upload_id!r} was used concurrently"
                        )
                    await conn.execute(Q.consume_upload, {"id": asset.upload_id})
            record = await insert_item(conn, item, assets)
            await self.quota.check(conn, spec.project_id)
            return record

    def _discard_staging(self, upload_id: str) -> None:
        # The row is consumed; its staging file has no further use.
        path = self._staging_dir() / upload_id
        path.unlink(missing_ok=True)

    # -- uploads ----------------------------------------------------------

    def _staging_dir(self) -> Path:
        path = self._storage.scratch_dir() / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def receive_upload(self, principal: Principal, parts: AsyncIterator[UploadPart]) -> UploadRecord:
        # Authorised before a byte is staged: the scope at once, the project and
        # its storage quota on the first message; the staging file comes after.
        principal.require_scope("catalog:write")
        upload_id = new_id("up")
        path = self._staging_dir() / upload_id
        digest = hashlib.sha256()
        received = 0
        finished = False
        first: UploadPart | None = None
        out: BinaryIO | None = None
        used = quota = 0
        probe = CommitProbe()
        try:
            async for part in parts:
                if first is None:
                    first = part
                    if not part.project_id:
                        raise invalid_argument(
                            "PROJECT_ID_REQUIRED",
                            "the first message must name project_id",
                            field="project_id",
                        )
                    principal.require_project(part.project_id)
                    async with self._db.connection() as conn:
                        used, quota = await self.quota.usage(conn, part.project_id)
                    if used + part.total_size > quota:
                        raise quota_exceeded(part.project_id, used + part.total_size, quota)
                    out = path.open("wb")
                if finished:
                    raise invalid_argument("INVALID_WRITE_OFFSET", "data after finish_write", field="finish_write")
                if part.write_offset != received:
                    raise invalid_argument(
                        "INVALID_WRITE_OFFSET",
                        f"write_offset {part.write_offset} but {received} bytes were received",
                        field="write_offset",
                    )
                if len(part.data) > self.limits.max_chunk_bytes:
                    raise invalid_argument(
                        "CHUNK_TOO_LARGE",
                        f"chunks are at most {self.limits.max_chunk_bytes} bytes",
                        field="data",
                    )
                received += len(part.data)
                if received > self.limits.max_upload_bytes:
                    raise DomainError(
                        Code.RESOURCE_EXHAUSTED,
                        "UPLOAD_TOO_LARGE",
                        f"uploads are limited to {self.limits.max_upload_bytes} bytes",
                    )
                if used + received > quota:
                    raise quota_exceeded(first.project_id, used + received, quota)
                if part.data:
                    assert out is not None
                    digest.update(part.data)
                    await asyncio.to_thread(out.write, part.data)
                finished = part.finish_write
            if out is not None:
                out.close()
            if first is None or not finished:
                raise invalid_argument(
                    "INCOMPLETE_UPLOAD", "the upload stream ended without finish_write", field="finish_write"
                )
            sha = digest.hexdigest()
            if first.total_size and first.total_size != received:
                raise invalid_argument(
                    "INCOMPLETE_UPLOAD",
                    f"received {received} bytes but total_size was {first.total_size}",
                    field="total_size",
                )
            if first.sha256 and first.sha256.lower() != sha:
                raise invalid_argument("INCOMPLETE_UPLOAD", "the received bytes do not match sha256", field="sha256")
            async with self._db.transaction(probe) as conn:
                row = await (
                    await conn.execute(
                        Q.insert_upload,
                        {
                            "id": upload_id,
                            "project_id": first.project_id,
                            "token_id": principal.id,
                            "file_name": first.file_name[:255],
                            "staging_path": str(path),
                            "size_bytes": received,
                            "sha256": sha,
                            "ttl_seconds": UPLOAD_TTL_SECONDS,
                        },
                    )
                ).fetchone()
                await self.quota.check(conn, first.project_id)
        except BaseException as error:
            if out is not None:
                out.close()
            # Kept when the upload's row may have committed (the sweep removes
            # staging files without a row).
            if surely_rolled_back(probe, error):
                path.unlink(missing_ok=True)
            raise
        assert row is not None
        return UploadRecord(upload_id, received, sha, row["expire_time"])

    async def expire_uploads(self) -> int:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.expired_uploads)).fetchall()
        for row in rows:
            Path(row["staging_path"]).unlink(missing_ok=True)
        return len(rows)

    # -- downloads ----------------------------------------------------------

    async def asset_file(self, principal: Principal, resource_name: str) -> FileRef:
        artifact = ARTIFACT_RESOURCE.match(resource_name)
        if artifact:
            return await self._artifact_file(principal, artifact.group("artifact_id"))
        match = ASSET_RESOURCE.match(resource_name)
        if not match:
            raise invalid_argument(
                "INVALID_RESOURCE_NAME",
                "resource_name must be items/{item_id}/assets/{asset_key} or artifacts/{artifact_id}",
                field="resource_name",
            )
        item_id, key = match.group("item_id"), match.group("key")
        if principal.kind == "job":
            # A job token reads its own job's sources, while its attempt lives.
            if item_id not in principal.source_item_ids:
                raise permission_denied("JOB_TOKEN_NOT_ALLOWED", "a job token may only read its job's source items")
            await self._require_live_attempt(principal)
            principal = SOURCE_READER
        principal.require_scope("catalog:read")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_asset_file, {"item_id": item_id, "key": key})).fetchone()
            if row is None:
                owner = await (await conn.execute(Q.item_project, {"id": item_id})).fetchone()
                if owner is None:
                    raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
                principal.require_project(owner["project_id"])
                raise not_found("ASSET_NOT_FOUND", f"item {item_id!r} has no asset {key!r}")
        principal.require_project(row["project_id"])
        return FileRef(row["storage_key"], row["media_type"], row["size_bytes"], row["sha256"])

    async def _artifact_file(self, principal: Principal, artifact_id: str) -> FileRef:
        principal.require_scope("analytics:read")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_artifact_file, {"id": artifact_id})).fetchone()
        if row is None:
            raise not_found("ARTIFACT_NOT_FOUND", f"artifact {artifact_id!r} does not exist", artifact_id=artifact_id)
        principal.require_project(row["project_id"])
        return FileRef(row["storage_key"], row["media_type"], row["size_bytes"], row["sha256"])

    async def _require_live_attempt(self, principal: Principal) -> None:
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": principal.job_id})).fetchone()
        if (
            row is None
            or row["attempt"] != principal.attempt
            or row["worker_id"] != principal.name
            or row["status"] not in ("DISPATCHED", "RUNNING")
        ):
            raise failed_precondition(
                "JOB_ATTEMPT_OVER", f"attempt {principal.attempt} of job {principal.job_id} is over"
            )
