"""What a job costs: the area and asset count a job type's cost model
(geopera_kernel.raster.cost.CostModel) prices, estimated (and reserved) when the job is created."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geopera_kernel.raster.cost import CostModel
from geopera_kernel.raster.geo import Aoi, geodesic_area_km2, parse_aoi
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.errors import invalid_argument

if TYPE_CHECKING:
    from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord
    from geopera_kernel.server.domain.jobs.records import JobCreate


def aoi_area_km2(geojson: dict[str, Any], field: str, clip_to: BaseGeometry | None = None) -> float:
    """Geodesic area in km² of a GeoJSON area (optionally intersected with a footprint)."""
    aoi: Aoi | None = parse_aoi(geojson, field)
    if aoi is not None and clip_to is not None:
        aoi = aoi.within(clip_to)
    return 0.0 if aoi is None else aoi.area_km2


def priced_area_km2(job_type: JobTypeRecord, params: dict[str, Any], sources: list[ItemRecord]) -> float:
    """The area a job is priced by: its `aoi_geometry` intersected with the
    source items' footprint, or without an AOI the footprint itself (a
    whole-scene job costs its scene). A per-km² price with nothing to measure
    is refused rather than estimated at 0 km²."""
    footprint = shapely.union_all([shape(s.geometry) for s in sources]) if sources else None
    aoi = params.get("aoi_geometry")
    if isinstance(aoi, dict):
        return aoi_area_km2(aoi, "input_params.aoi_geometry", footprint)
    if footprint is not None:
        return geodesic_area_km2(footprint)
    if job_type.cost.per_km2 > 0:
        raise invalid_argument(
            "COST_NOT_ESTIMABLE",
            f"job type {job_type.id!r} is priced per km², but the input names neither an aoi_geometry "
            "nor source items whose footprint could be measured",
            field="input_params.aoi_geometry",
        )
    return 0.0


def measures_geometry(spec: JobCreate, sources: list[ItemRecord]) -> bool:
    """Whether `estimate` parses or measures a geometry (see priced_area_km2)."""
    return spec.area_km2 is None and (bool(sources) or isinstance(spec.input_params.get("aoi_geometry"), dict))


@dataclass(frozen=True)
class Estimate:
    """What a job costs: its type's cost model over the km² and assets priced,
    the credits reserved (`total`), and the project's available credits
    before the hold (`available`; -1 until the hold is known). A job being
    dispatched was priced when it was created: `already_reserved`, and only
    `total` (its hold) is known."""

    cost: CostModel | None  # None when already_reserved
    area_km2: float
    asset_count: int
    total: int
    available: int = -1
    already_reserved: bool = False

    def metadata(self) -> dict[str, str]:
        """The breakdown as ErrorInfo metadata (an INSUFFICIENT_CREDITS
        error's, beside its `required` and `available`)."""
        if self.cost is None:
            return {}
        return {
            "flat": repr(self.cost.flat),
            "per_km2": repr(self.cost.per_km2),
            "area_km2": repr(self.area_km2),
            "per_asset": repr(self.cost.per_asset),
            "asset_count": str(self.asset_count),
            "minimum": str(self.cost.minimum),
        }


def estimate(job_type: JobTypeRecord, spec: JobCreate, sources: list[ItemRecord]) -> tuple[int, float, int]:
    """The credits a new job reserves, with the km² and asset count they price."""
    area = spec.area_km2
    if area is None:
        area = priced_area_km2(job_type, spec.input_params, sources)
    assets = spec.asset_count
    if assets is None:
        keys = spec.input_params.get("asset_keys")
        assets = len(keys) if isinstance(keys, list) and keys else sum(len(s.assets) for s in sources)
    return job_type.cost.credits(area, assets), area, assets
