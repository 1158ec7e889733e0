"""The "clip" job (``geopera_kernel.raster.job_types.CLIP``): cut a source item's raster assets to an area of
interest, one COG each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import shapely
from pydantic import BaseModel
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geopera_kernel.raster import RasterError
from geopera_kernel.raster.clip import clip_to_cog
from geopera_kernel.raster.domain_errors import DomainError
from geopera_kernel.raster.geo import Aoi, geodesic_area_km2, parse_aoi, to_geojson
from geopera_kernel.raster.job_types import CLIP, ClipInput
from geopera_kernel.worker.plugin import JobContext, JobFailed, JobOutput, JobPlugin, OutputFile, SourceItem

INVALID_GEOMETRY = "INVALID_GEOMETRY"
SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
ASSET_NOT_FOUND = "ASSET_NOT_FOUND"
NO_RASTER_ASSETS = "NO_RASTER_ASSETS"

_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
# Item properties describing the source's pixel grid no longer hold for a clipped copy.
_STALE_PROPERTY_PREFIXES = ("proj:",)


class ClipPlugin(JobPlugin, definition=CLIP):
    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        request = ClipInput.model_validate(params, from_attributes=True)
        source = source_item(ctx, request.source_item_id)
        aoi = job_aoi(request.aoi_geometry)
        keys = request.asset_keys or [key for key, asset in source.assets.items() if is_geotiff(asset.media_type)]
        if not keys:
            raise JobFailed(NO_RASTER_ASSETS, f"item {source.id} has no GeoTIFF assets to clip")
        missing = [key for key in keys if key not in source.assets]
        if missing:
            raise JobFailed(ASSET_NOT_FOUND, f"item {source.id} has no asset(s) {', '.join(missing)}")

        files: list[OutputFile] = []
        footprints: list[BaseGeometry] = []
        Path(ctx.workdir).mkdir(parents=True, exist_ok=True)
        for position, key in enumerate(keys):
            asset = source.assets[key]
            ctx.check_cancelled()
            dst = output_path(ctx.workdir, f"{position:02d}_{key}")
            message = f"clipping asset {key} ({position + 1}/{len(keys)})"

            def report(fraction: float, p: int = position, m: str = message) -> None:
                ctx.report_progress((p + fraction) / len(keys), m)

            try:
                result = clip_to_cog(
                    asset.path,
                    aoi.geometry,
                    dst,
                    progress=report,
                    check_cancelled=ctx.check_cancelled,
                )
            except RasterError as error:
                raise JobFailed(error.reason, f"asset {key}: {error.message}") from error
            files.append(OutputFile(key=key, path=dst, roles=list(asset.roles) or ["data"], title=key))
            footprints.append(shape(result.footprint))
        ctx.report_progress(1.0, "clipped")
        footprint = shapely.union_all(footprints)
        return [
            JobOutput(
                name=request.output_name or f"{source.name}_clip",
                geometry=to_geojson(footprint),
                datetime=source.datetime,
                files=files,
                properties={**derived_properties(source), "clip:aoi_area_km2": area_km2(footprint)},
                source_item_ids=[source.id],
            )
        ]


# --- helpers shared with the other built-in plugins --------------------------------------------


def source_item(ctx: JobContext, item_id: str) -> SourceItem:
    source = ctx.sources.get(item_id)
    if source is None:
        raise JobFailed(SOURCE_NOT_FOUND, f"source item {item_id} was not provided to the job")
    return source


def is_geotiff(media_type: str) -> bool:
    """True for GeoTIFF and COG media types ("image/tiff; application=geotiff[; profile=...]")."""
    parts = [part.strip().lower() for part in media_type.split(";")]
    return parts[0] == "image/tiff" and "application=geotiff" in parts[1:]


def job_aoi(value: Any) -> Aoi:
    """The job's AOI, parsed once. The server validated it before the job was created; this
    is defence in depth, so anything unexpected is a JobFailed(INVALID_GEOMETRY) rather than
    a crash, and an invalid polygon is repaired as the server repairs one."""
    try:
        return parse_aoi(value, "aoi_geometry", repair=True)
    except DomainError as error:
        raise JobFailed(INVALID_GEOMETRY, error.message) from error


def area_km2(geometry: BaseGeometry) -> float:
    """Geodesic (WGS84) area of a lon/lat geometry, rounded to m²."""
    return round(geodesic_area_km2(geometry), 6)


def derived_properties(source: SourceItem) -> dict[str, Any]:
    return {key: value for key, value in source.properties.items() if not key.startswith(_STALE_PROPERTY_PREFIXES)}


def output_path(workdir: Path, stem: str) -> Path:
    """A file under ``workdir`` named after ``stem`` (asset keys are user input)."""
    safe = _UNSAFE_FILE_CHARACTERS.sub("_", stem).strip("._") or "asset"
    return Path(workdir) / f"{safe[:100]}.tif"
