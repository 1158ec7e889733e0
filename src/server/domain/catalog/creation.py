"""Creating an item: its assets (uploads or server-local files) inspected,
converted to COGs if asked, stored, and registered in one transaction."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from geopera_kernel.raster import (
    CONVERSION_DRIVERS,
    GEOTIFF_DRIVERS,
    NOT_A_COG,
    RasterError,
    RasterInfo,
    convert_to_cog,
    datetime_from_name,
    inspect_raster,
)
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.items import (
    MAX_NAME_LENGTH,
    NewItem,
    StoredAsset,
    asset_storage_key,
    insert_item,
)
from geopera_kernel.server.domain.catalog.raster_info import discard_prepared, raster_error
from geopera_kernel.server.domain.catalog.uploads import CatalogUploads
from geopera_kernel.server.domain.models import AssetInput, ItemCreate, ItemRecord
from geopera_kernel.server.domain.names import ASSET_KEY, COLLECTION_ID
from geopera_kernel.server.domain.pending_objects import PendingObjects
from geopera_kernel.server.errors import failed_precondition, invalid_argument, not_found, permission_denied
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q
from geopera_kernel.server.validation import require_finite_json


class ItemCreation(CatalogUploads):
    def _validate_create(self, principal: Principal, spec: ItemCreate) -> None:
        if not spec.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(spec.project_id)
        if not spec.name or len(spec.name) > MAX_NAME_LENGTH or "/" in spec.name:
            raise invalid_argument(
                "INVALID_ITEM_NAME", f"name must be 1-{MAX_NAME_LENGTH} characters without '/'", field="name"
            )
        COLLECTION_ID.require(
            spec.collection_id, what="collection_id", reason="INVALID_COLLECTION_ID", field="collection_id"
        )
        require_finite_json(spec.properties, "properties")
        if not spec.assets:
            raise invalid_argument("ASSETS_REQUIRED", "at least one asset is required", field="assets")
        seen: set[str] = set()
        for i, asset in enumerate(spec.assets):
            where = f"assets[{i}]"
            ASSET_KEY.require(asset.key, what="an asset key", reason="INVALID_ASSET_KEY", field=f"{where}.key")
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
                raise raster_error(err, field) from err
        converted = self._storage.scratch_dir() / f"cog-{new_id('tmp')}.tif"
        try:
            convert_to_cog(source, converted, drivers=drivers, check_cancelled=check_cancelled)
            return converted, inspect_raster(converted, check_cancelled=check_cancelled), True
        except BaseException as err:
            converted.unlink(missing_ok=True)
            if isinstance(err, RasterError):
                raise raster_error(err, field) from err
            raise

    async def create_item(self, principal: Principal, spec: ItemCreate, *, validate_only: bool = False) -> ItemRecord:
        """With `validate_only` every check runs (the assets inspected, and
        converted when asked, into temporary files) and the registering
        transaction is rolled back before any byte is stored: the answer is
        the item as it would be, with an empty id; uploads stay unconsumed."""
        self._validate_create(principal, spec)
        item_id = new_id("it")
        prepared: list[tuple[AssetInput, Path, RasterInfo, bool]] = []
        pending = PendingObjects(self._storage)
        try:
            for i, asset in enumerate(spec.assets):
                source = await self._source_path(spec, i, asset)
                path, info, temporary = await self._raster_pool.run(
                    functools.partial(self._prepare_asset, source, spec.convert_to_cog, f"assets[{i}]"),
                    discard=discard_prepared,
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
            keys = [asset_storage_key(spec.project_id, item_id, asset.key) for asset, *_ in prepared]
            if not validate_only:
                for key, (_asset, path, _info, _) in zip(keys, prepared, strict=True):
                    await pending.put(key, path)
            record = await self._insert_item(spec, item_id, when, prepared, keys, pending, validate_only)
        except BaseException as error:
            await pending.settle(error)
            raise
        finally:
            for _, path, _, temporary in prepared:
                if temporary:
                    path.unlink(missing_ok=True)
        if validate_only:
            return replace(record, id="")
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
        storage_keys: list[str],
        pending: PendingObjects,
        validate_only: bool,
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
            for (asset, _path, info, _), key in zip(prepared, storage_keys, strict=True)
        ]
        async with self._db.transaction(pending.probe, rollback=validate_only) as conn:
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
