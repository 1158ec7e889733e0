"""Pydantic building blocks shared by the methods' params and results."""

from __future__ import annotations

import datetime as dt
import math
import sys
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from geopera_kernel.analytics.bands import normalize_common_name
from geopera_kernel.analytics.indices import INDEX_NAMES
from geopera_kernel.raster.domain_errors import DomainError
from geopera_kernel.raster.geo import parse_zones

GEOMETRY_FIELD = "params.geometry"
_AREA_TYPES = ["Polygon", "MultiPolygon", "Feature", "FeatureCollection"]


def _check_geometry(value: dict[str, Any]) -> dict[str, Any]:
    try:
        parse_zones(value, GEOMETRY_FIELD)
    except DomainError as error:
        path = error.violations[0].field if error.violations else GEOMETRY_FIELD
        raise PydanticCustomError(
            "invalid_geometry", "{message}", {"message": error.message, "field_path": path}
        ) from None
    return value


GeoJSONArea = Annotated[
    dict[str, Any],
    AfterValidator(_check_geometry),
    WithJsonSchema(
        {
            "type": "object",
            "description": "GeoJSON (RFC 7946, lon/lat WGS 84): a Polygon, MultiPolygon, Feature or "
            "FeatureCollection of (Multi)Polygons",
            "required": ["type"],
            "properties": {"type": {"enum": _AREA_TYPES}},
        }
    ),
]


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


IndexName = Annotated[
    # The names are data (a tuple built at import), which pydantic reads at run time; a
    # static checker cannot see a Literal's values through a variable.
    Literal[INDEX_NAMES],  # type: ignore[valid-type]
    BeforeValidator(_upper),
    Field(description="Spectral index (case-insensitive): " + ", ".join(INDEX_NAMES)),
]


def _whole_number(value: Any) -> Any:
    """JSON has one number type (a Struct holds 3 as 3.0): a whole float is a band index."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


BandRef = Annotated[
    Annotated[int, Field(ge=1, strict=True)] | Annotated[str, Field(min_length=1)], BeforeValidator(_whole_number)
]


def _check_mapping(value: dict[str, int | str] | None) -> dict[str, int | str] | None:
    if value is None:
        return None
    normalised: dict[str, int | str] = {}
    for key, band in value.items():
        common = normalize_common_name(key)
        if common is None:
            raise PydanticCustomError(
                "unknown_common_name",
                "band_mapping key {key!r} is not a STAC EO common name (red, nir, swir16, ...)",
                {"key": key, "field_path": f"params.band_mapping.{key}"},
            )
        normalised[common] = band
    return normalised


BandMapping = Annotated[
    dict[str, BandRef] | None,
    AfterValidator(_check_mapping),
    Field(
        description='Common name -> 1-based band index or band name, e.g. {"RED": 3, "nir": "B08"}; '
        "keys are case-insensitive. Overrides band auto-detection."
    ),
]

Percentile = Annotated[float, Field(ge=0, le=100)]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # naive datetimes are UTC, as in STAC
    return value


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]

StatName = Literal["count", "nodata_count", "min", "max", "mean", "std", "sum", "median"]
DEFAULT_STATS: list[StatName] = ["count", "nodata_count", "min", "max", "mean", "std"]
Coverage = Literal["center", "exact"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HistogramParams(Params):
    bins: int = Field(10, ge=1, le=1000)
    range: tuple[float, float] | None = Field(
        None, description="[min, max]; default: the minimum and maximum valid values"
    )

    @model_validator(mode="after")
    def _range_order(self) -> HistogramParams:
        if self.range is None:
            return self
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("histogram range must be two finite numbers")
        if not low < high:
            raise ValueError("histogram range must be [min, max] with min < max")
        if not splittable(low, high, self.bins):
            raise ValueError(f"histogram range {low!r}..{high!r} cannot be split into {self.bins} bins")
        return self


def splittable(low: float, high: float, bins: int) -> bool:
    """Whether [low, high] splits into `bins` bins of a normal (not denormal), representable
    width with strictly increasing edges: NumPy cannot for [-1e308, 1e308] or [0, 5e-324]."""
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return False
    width = (high - low) / bins
    if not math.isfinite(width) or width < sys.float_info.min:
        return False
    return bool(np.all(np.diff(np.linspace(low, high, bins + 1)) > 0))


class PercentileValue(BaseModel):
    percentile: float
    value: float | None


class HistogramResult(BaseModel):
    edges: list[float] = Field(description="bins + 1 bin edges")
    counts: list[float] = Field(description="pixels (coverage-weighted with exact coverage) per bin")


class Resolution(BaseModel):
    x: float
    y: float
