"""What map tiles of an item's asset or of an analytics artifact are drawn from: the stored
file, its bands and stored render hint, for a caller that may read it (the same scope and
project rules as downloading it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.reads import CatalogReads
from geopera_kernel.server.domain.models import AssetRecord
from geopera_kernel.server.errors import invalid_argument, not_found
from geopera_kernel.server.store import Q

# The change-detection difference: drawn with a diverging colour map centred on zero.
DIFFERENCE_ARTIFACT = ("change_detection", "difference_cog")
# GeoTIFFs, COG or not (rio-tiler reads both; a COG fast).
TIFF = "image/tiff"


@dataclass(frozen=True)
class RenderSource:
    """A COG to draw. `render` is shaped like the RenderHint proto ({} when none is stored:
    the renderer then takes it from the embedded statistics); `bands` like Band protos."""

    path: str
    sha256: str
    bands: list[dict[str, Any]] = field(default_factory=list)
    render: dict[str, Any] = field(default_factory=dict)
    diverging: bool = False
    # Items never change; artifacts expire after the retention.
    immutable: bool = True


class CatalogRenderSources(CatalogReads):
    async def item_render_source(self, principal: Principal, item_id: str, asset_key: str = "") -> RenderSource:
        principal.require_scope("catalog:read")
        item = await self.get_item(principal, item_id)
        asset = _renderable_asset(item.assets, item_id, asset_key)
        return RenderSource(
            self._storage.local_path(asset.storage_key), asset.sha256, asset.bands, asset.render, diverging=False
        )

    async def artifact_render_source(self, principal: Principal, artifact_id: str) -> RenderSource:
        principal.require_scope("analytics:read")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_artifact_render_source, {"id": artifact_id})).fetchone()
        if row is None:
            raise not_found("ARTIFACT_NOT_FOUND", f"artifact {artifact_id!r} does not exist", artifact_id=artifact_id)
        principal.require_project(row["project_id"])
        if not row["media_type"].startswith(TIFF):
            raise invalid_argument(
                "NOT_RENDERABLE", f"artifact {artifact_id!r} is {row['media_type']}, not a GeoTIFF: download it instead"
            )
        return RenderSource(
            self._storage.local_path(row["storage_key"]),
            row["sha256"],
            diverging=(row["operation"], row["key"]) == DIFFERENCE_ARTIFACT,
            immutable=False,
        )


def _renderable_asset(assets: list[AssetRecord], item_id: str, asset_key: str) -> AssetRecord:
    if asset_key:
        for asset in assets:
            if asset.key == asset_key:
                if not asset.media_type.startswith(TIFF):
                    raise invalid_argument(
                        "NOT_RENDERABLE", f"asset {asset_key!r} is {asset.media_type}, not a GeoTIFF", field="asset"
                    )
                return asset
        raise not_found("ASSET_NOT_FOUND", f"item {item_id!r} has no asset {asset_key!r}")
    for asset in assets:
        if asset.media_type.startswith(TIFF):
            return asset
    raise invalid_argument("NOT_RENDERABLE", f"item {item_id!r} has no GeoTIFF asset to draw")
