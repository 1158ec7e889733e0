"""The "clip" job: cut a source item's raster assets to an area of interest, one COG each."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar

import shapely
from pydantic import BaseModel, ConfigDict, Field
from pyproj import Geod
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from server.raster import RasterError
from server.raster.clip import clip_to_cog
from worker.plugin import CostModel, JobContext, JobFailed, JobOutput, JobPlugin, OutputFile, SourceItem

INVALID_GEOMETRY = "INVALID_GEOMETRY"
SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
ASSET_NOT_FOUND = "ASSET_NOT_FOUND"
NO_RASTER_ASSETS = "NO_RASTER_ASSETS"

_AREA_TYPES = ("Polygon", "MultiPolygon")
_GEOD = Geod(ellps="WGS84")
_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
# Item properties describing the source's pixel grid no longer hold for a clipped copy.
_STALE_PROPERTY_PREFIXES = ("proj:",)

AOI_DESCRIPTION = (
    "Area of interest in EPSG:4326 longitude/latitude (RFC 7946): a GeoJSON Polygon, MultiPolygon, "
    "Feature or FeatureCollection of polygonal features (their union is used)."
)


class ClipInput(BaseModel):
    """Clip raster assets of one item to an area of interest."""

    model_config = ConfigDict(extra="forbid", title="ClipInput")

    source_item_id: str = Field(min_length=1, description="Id of the item whose raster assets are clipped.")
    aoi_geometry: dict[str, Any] = Field(description=AOI_DESCRIPTION)
    asset_keys: list[str] = Field(
        default_factory=list,
        description="Keys of the assets to clip; empty clips every GeoTIFF asset of the item. "
        "Each output asset keeps its source key.",
    )
    output_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description='Name of the output item; defaults to "<source item name>_clip".',
    )


class ClipPlugin(JobPlugin):
    """Cost: 1 + 0.5 per km² of AOI + 1 per asset clipped (the AOI area is the user's polygon;
    reading is bounded by it, and each asset is a separate read/compress/statistics pass)."""

    job_type_id: ClassVar[str] = "clip"
    description: ClassVar[str] = (
        "Clip the raster assets of an item to an area of interest. Pixels whose centre lies "
        "outside the area become nodata; each asset becomes a Cloud Optimized GeoTIFF with the "
        "source's bands, data type, nodata and metadata, cropped to the area's bounding window."
    )
    input_model: ClassVar[type[BaseModel]] = ClipInput
    cost_model: ClassVar[CostModel] = CostModel(flat=1.0, per_km2=0.5, per_asset=1.0)

    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        request = ClipInput.model_validate(params, from_attributes=True)
        source = source_item(ctx, request.source_item_id)
        aoi = parse_aoi(request.aoi_geometry)
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
                    aoi,
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
                geometry=geojson(footprint),
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


def parse_aoi(value: Any) -> Polygon | MultiPolygon:
    """GeoJSON Polygon/MultiPolygon/Feature/FeatureCollection (lon/lat) -> one shapely area.

    The server validates AOIs before a job is created; this is defence in depth, so anything
    unexpected is a JobFailed(INVALID_GEOMETRY) rather than a crash.
    """
    geometries = [_area(geometry) for geometry in _geometries(value)]
    area = shapely.union_all(geometries) if len(geometries) > 1 else geometries[0]
    if not isinstance(area, Polygon | MultiPolygon) or area.is_empty or area.area == 0.0:
        raise JobFailed(INVALID_GEOMETRY, "the area of interest has no area")
    return area


def _geometries(value: Any) -> list[Any]:
    if not isinstance(value, dict):
        raise JobFailed(INVALID_GEOMETRY, "the area of interest must be a GeoJSON object")
    kind = value.get("type")
    if kind == "Feature":
        return [value.get("geometry")]
    if kind == "FeatureCollection":
        features = value.get("features")
        if not isinstance(features, list) or not features:
            raise JobFailed(INVALID_GEOMETRY, "a FeatureCollection needs a non-empty features array")
        return [feature.get("geometry") if isinstance(feature, dict) else None for feature in features]
    return [value]


def _area(value: Any) -> Polygon | MultiPolygon:
    if not isinstance(value, dict) or value.get("type") not in _AREA_TYPES:
        kind = value.get("type") if isinstance(value, dict) else type(value).__name__
        raise JobFailed(INVALID_GEOMETRY, f"the area of interest must be a Polygon or MultiPolygon, got {kind}")
    try:
        geometry = shape(value)
    except (GEOSException, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise JobFailed(INVALID_GEOMETRY, f"malformed {value['type']}: {error}") from error
    if geometry.is_empty:
        raise JobFailed(INVALID_GEOMETRY, "the area of interest is empty")
    west, south, east, north = geometry.bounds
    if not all(map(math.isfinite, (west, south, east, north))) or not (
        -180.0 <= west <= east <= 180.0 and -90.0 <= south <= north <= 90.0
    ):
        raise JobFailed(INVALID_GEOMETRY, "coordinates must be longitude/latitude in EPSG:4326")
    if not geometry.is_valid:
        # Same repair as the server's: keep the polygonal parts of the valid form.
        repaired = shapely.make_valid(geometry)
        parts = [g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, Polygon | MultiPolygon)]
        geometry = shapely.union_all(parts) if parts else Polygon()
    if not isinstance(geometry, Polygon | MultiPolygon) or geometry.area == 0.0:
        raise JobFailed(INVALID_GEOMETRY, "the area of interest has no area")
    return geometry


def geojson(geometry: shapely.Geometry) -> dict[str, Any]:
    """A (Multi)Polygon as a GeoJSON dict with RFC 7946 ring orientation."""
    if isinstance(geometry, Polygon):
        geometry = orient(geometry, sign=1.0)
    elif isinstance(geometry, MultiPolygon):
        geometry = MultiPolygon([orient(part, sign=1.0) for part in geometry.geoms])
    else:
        parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
        return geojson(shapely.union_all(parts))
    return _lists(mapping(geometry))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(item) for item in value]
    return value


def area_km2(geometry: shapely.Geometry) -> float:
    """Geodesic (WGS84) area of a lon/lat geometry, rounded to m²."""
    return round(abs(_GEOD.geometry_area_perimeter(geometry)[0]) / 1e6, 6)


def derived_properties(source: SourceItem) -> dict[str, Any]:
    return {key: value for key, value in source.properties.items() if not key.startswith(_STALE_PROPERTY_PREFIXES)}


def output_path(workdir: Path, stem: str) -> Path:
    """A file under ``workdir`` named after ``stem`` (asset keys are user input)."""
    safe = _UNSAFE_FILE_CHARACTERS.sub("_", stem).strip("._") or "asset"
    return Path(workdir) / f"{safe[:100]}.tif"
