"""`clip.create_from_item`: validate the AOI against the source item before a
single credit is reserved, then create and dispatch a `clip` job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from shapely.geometry import shape

from geopera_kernel.raster.geo import Aoi, parse_aoi
from geopera_kernel.raster.job_types import CLIP
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.catalog import CatalogService
from geopera_kernel.server.domain.jobs import JobCreate, JobService, JobSpend
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.validation import require_known

_RASTER_MEDIA_PREFIX = "image/tiff"


@dataclass(frozen=True)
class ClipRequest:
    source_item_id: str
    project_id: str
    aoi_geometry: dict[str, Any] | None
    asset_keys: list[str]
    output_name: str
    target_collection_id: str


def _overlap(aoi_geometry: Any, source: ItemRecord) -> Aoi:
    """The AOI within the source's footprint (priced by its geodesic km²)."""
    overlap = parse_aoi(aoi_geometry, "aoi_geometry").within(shape(source.geometry))
    if overlap is None:
        raise invalid_argument(
            "AOI_OUTSIDE_FOOTPRINT",
            f"aoi_geometry does not overlap the footprint of item {source.id}",
            field="aoi_geometry",
        )
    return overlap


async def create_clip_job(
    principal: Principal,
    catalog: CatalogService,
    jobs: JobService,
    request: ClipRequest,
    *,
    commit: CallCommit[tuple[JobSpend, list[str]]] = PLAIN_COMMIT,
) -> tuple[JobSpend, list[str]]:
    """The clip job (see JobCreation.create, also for `commit`) and the
    asset keys it clips."""
    if not request.source_item_id:
        raise invalid_argument("SOURCE_ITEM_REQUIRED", "source_item_id is required", field="source_item_id")
    source = await catalog.get_item(principal, request.source_item_id)
    project_id = request.project_id or source.project_id
    principal.require_project(project_id)
    if project_id != source.project_id:
        raise invalid_argument(
            "SOURCE_IN_OTHER_PROJECT",
            f"item {source.id} belongs to project {source.project_id!r}; clip it within that project",
            field="project_id",
        )
    await commit.check(project_id)  # a retry of a finished call replays before the checks below
    if request.aoi_geometry is None:
        raise invalid_argument("INVALID_GEOMETRY", "aoi_geometry is required", field="aoi_geometry")
    # Off the event loop: parsing and intersecting the client's AOI can take a while.
    overlap = await asyncio.to_thread(_overlap, request.aoi_geometry, source)
    rasters = [a.key for a in source.assets if a.media_type.startswith(_RASTER_MEDIA_PREFIX)]
    keys = list(dict.fromkeys(request.asset_keys)) if request.asset_keys else rasters
    require_known(
        keys, rasters, reason="UNKNOWN_ASSET_KEY", field="asset_keys", unknown=f"item {source.id} has no raster asset"
    )
    params: dict[str, Any] = {
        "source_item_id": source.id,
        "aoi_geometry": request.aoi_geometry,
        "asset_keys": keys,
    }
    if request.output_name:
        params["output_name"] = request.output_name
    spend = await jobs.create(
        principal,
        JobCreate(
            project_id=project_id,
            job_type_id=CLIP.id,
            input_params=params,
            target_collection_id=request.target_collection_id or CLIP.id,
            area_km2=overlap.area_km2,
            asset_count=len(keys),
        ),
        dispatch=True,
        commit=commit.adapt(lambda outcome: (outcome, keys)),
    )
    return spend, keys
