"""What a job costs: a job type's cost model, and the area and asset count it
is priced by, estimated (and reserved) when the job is created."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import shapely
from pyproj import Geod
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from server.domain.models import ItemRecord
from server.errors import invalid_argument
from server.geo import parse_area

if TYPE_CHECKING:
    from server.domain.jobs.job_types import JobTypeRecord
    from server.domain.jobs.records import JobCreate

_GEOD = Geod(ellps="WGS84")

# The largest cost in credits: exact in float arithmetic (the cost is computed
# in floats) and in JavaScript numbers, far below the int64 of the balances.
MAX_CREDITS = 2**53 - 1


@dataclass(frozen=True)
class CostModel:
    flat: float = 1.0
    per_km2: float = 0.0
    per_asset: float = 0.0
    minimum: int = 1

    @classmethod
    def checked(cls, flat: float, per_km2: float, per_asset: float, minimum: int, field: str) -> CostModel:
        """A declared cost model, refused (INVALID_ARGUMENT `INVALID_COST_MODEL`)
        unless every coefficient is a finite number from 0 to MAX_CREDITS: a NaN,
        infinite or negative price would reserve nonsense or pay the caller.
        A `minimum` of 0 means 1."""
        for name, value in (("flat", flat), ("per_km2", per_km2), ("per_asset", per_asset), ("minimum", minimum)):
            if not (math.isfinite(value) and 0 <= value <= MAX_CREDITS):
                raise invalid_argument(
                    "INVALID_COST_MODEL",
                    f"cost_model.{name} must be a finite number from 0 to {MAX_CREDITS}, not {value!r}",
                    field=f"{field}.{name}",
                )
        return cls(float(flat), float(per_km2), float(per_asset), max(1, int(minimum)))

    def _price(self, area_km2: float, assets: int) -> int | None:
        """The formula in whole credits; None when it is not a finite number
        of at most MAX_CREDITS."""
        raw = self.flat + self.per_km2 * area_km2 + self.per_asset * assets
        if not (math.isfinite(raw) and raw <= MAX_CREDITS):
            return None
        return max(self.minimum, math.ceil(raw - 1e-9))

    def credits(self, area_km2: float, assets: int) -> int:
        """The estimate reserved at creation; refused (INVALID_ARGUMENT
        `COST_OUT_OF_RANGE`) beyond MAX_CREDITS, e.g. a huge AOI times a
        large per-km² price."""
        price = self._price(area_km2, assets)
        if price is None:
            raise invalid_argument(
                "COST_OUT_OF_RANGE",
                f"the job would cost more than {MAX_CREDITS} credits ({area_km2:.4g} km², {assets} assets), "
                "the most a job may cost",
            )
        return price

    def actual(self, area_km2: float, assets: int) -> int:
        """The cost of what a job did, saturating at MAX_CREDITS: never more
        than the hold is captured anyway (see JobService.succeed)."""
        price = self._price(area_km2, assets)
        return MAX_CREDITS if price is None else price


def geodesic_area_km2(geometry: BaseGeometry) -> float:
    """Area in km² on the WGS84 ellipsoid of a lon/lat geometry."""
    return 0.0 if geometry.is_empty else abs(float(_GEOD.geometry_area_perimeter(geometry)[0])) / 1e6


def aoi_area_km2(geojson: dict[str, Any], field: str, clip_to: BaseGeometry | None = None) -> float:
    """Geodesic area in km² of a GeoJSON area (optionally intersected with a footprint)."""
    area: BaseGeometry = parse_area(geojson, field)
    if clip_to is not None:
        area = area.intersection(clip_to)
    return geodesic_area_km2(area)


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
