"""The built-in job types, defined once: what the server registers and grants, and what the
worker's plugins run (``geopera_kernel.worker.plugins``). A definition is data: its id, description, input
model (its JSON Schema is the type's input schema) and cost model; no code runs a job here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geopera_kernel.raster.bathymetry import DEFAULT_LAND_NDWI_THRESHOLD, DEFAULT_MAX_DEPTH_M, DEFAULT_N
from geopera_kernel.raster.cost import CostModel

AOI_DESCRIPTION = (
    "Area of interest in EPSG:4326 longitude/latitude (RFC 7946): a GeoJSON Polygon, MultiPolygon, "
    "Feature or FeatureCollection of polygonal features (their union is used)."
)


@dataclass(frozen=True)
class JobTypeDefinition:
    id: str
    description: str
    input_model: type[BaseModel]
    cost: CostModel

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()


def output_name_field(suffix: str) -> Any:
    """The optional name of a job's output item (pydantic's ``Field``)."""
    return Field(
        default=None,
        min_length=1,
        max_length=200,
        description=f'Name of the output item; defaults to "<source item name>_{suffix}".',
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
    output_name: str | None = output_name_field("clip")


# Cost: 1 + 0.5 per km² of AOI + 1 per asset clipped (the AOI area is the user's polygon;
# reading is bounded by it, and each asset is a separate read/compress/statistics pass).
CLIP_DESCRIPTION = (
    "Clip the raster assets of an item to an area of interest. Pixels whose centre lies "
    "outside the area become nodata; each asset becomes a Cloud Optimized GeoTIFF with the "
    "source's bands, data type, nodata and metadata, cropped to the area's bounding window."
)
CLIP = JobTypeDefinition("clip", CLIP_DESCRIPTION, ClipInput, CostModel(flat=1.0, per_km2=0.5, per_asset=1.0))


class BathymetryInput(BaseModel):
    """Estimate water depth from blue and green reflectance."""

    model_config = ConfigDict(extra="forbid", title="BathymetryInput", allow_inf_nan=False)

    source_item_id: str = Field(min_length=1, description="Id of the item holding the multispectral raster.")
    asset_key: str = Field(
        default="data",
        min_length=1,
        description="Asset with blue, green and (for the land mask) nir bands, found by their STAC "
        "common names, band descriptions or sensor band ids (B02, B03, B08...).",
    )
    m0: float = Field(
        description="Offset of the Stumpf model (metres), calibrated against known depths for the scene: "
        "depth = m1 * ln(n*Rw(blue)) / ln(n*Rw(green)) - m0."
    )
    m1: float = Field(description="Gain of the Stumpf model (metres per unit of log ratio), calibrated per scene.")
    n: float = Field(
        default=DEFAULT_N,
        gt=0,
        description="Fixed constant keeping both logarithms positive (Stumpf et al. use 1000).",
    )
    land_ndwi_threshold: float = Field(
        default=DEFAULT_LAND_NDWI_THRESHOLD,
        ge=-1.0,
        le=1.0,
        description="Pixels with NDWI = (green - nir) / (green + nir) below this are land and left empty; "
        "ignored when the raster has no nir band.",
    )
    max_depth_m: float = Field(
        default=DEFAULT_MAX_DEPTH_M,
        gt=0,
        description="Depths outside [0, max_depth_m] are left empty: the optical signal of deeper water "
        "is too weak for the model.",
    )
    aoi_geometry: dict[str, Any] | None = Field(
        default=None,
        description=AOI_DESCRIPTION + " When given, the raster is clipped to it first.",
    )
    output_name: str | None = output_name_field("bathymetry")


# Cost: 2 + 1 per km² (AOI, or item footprint without one): a clip plus a float64 per-pixel
# model and a float32 COG, about twice the work of a one-asset clip.
BATHYMETRY_DESCRIPTION = (
    "Satellite-derived bathymetry with the Stumpf et al. (2003) log-ratio model. Writes one "
    'float32 Cloud Optimized GeoTIFF asset "depth" in metres (positive down); land (NDWI below '
    "the threshold), invalid pixels and depths beyond the maximum are nodata (NaN)."
)
BATHYMETRY = JobTypeDefinition(
    "bathymetry", BATHYMETRY_DESCRIPTION, BathymetryInput, CostModel(flat=2.0, per_km2=1.0, per_asset=0.0)
)


class AnalyticsJobInput(BaseModel):
    """An analytics method and its params, as analytics.execute takes them."""

    model_config = ConfigDict(extra="forbid", title="AnalyticsJobInput")

    operation: str = Field(min_length=1, description="The analytics method, e.g. zonal_stats.")
    params: dict[str, Any] = Field(description="The method's params, as analytics.execute takes them.")


# No credits: analytics computes over existing items, it is not a spend (the product docs).
# The server creates these jobs (analytics.submit), a worker runs them with the analytics engine.
ANALYTICS_DESCRIPTION = (
    "An analytics method run as a job (analytics.submit): its JSON result and files are the job's "
    "output artifacts. Created only by analytics.submit; costs no credits."
)
ANALYTICS = JobTypeDefinition(
    "analytics", ANALYTICS_DESCRIPTION, AnalyticsJobInput, CostModel(flat=0.0, per_km2=0.0, per_asset=0.0, minimum=0)
)

# Sorted by id, as the worker's plugin registry lists them.
BUILTIN_JOB_TYPES = (ANALYTICS, BATHYMETRY, CLIP)
