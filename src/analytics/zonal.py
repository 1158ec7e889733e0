"""``zonal_stats``: statistics of a band or spectral index inside one or more zones.

Two pixel rules, matching the two reference implementations:

* ``center`` (rasterstats): a pixel belongs to a zone when its centre is inside, or with
  ``all_touched`` when the zone touches it at all; every statistic is unweighted and
  percentiles are numpy's linear ones.
* ``exact`` (exactextract): every pixel is weighted by the fraction of its area inside the
  zone: count = Σw, sum = Σ w·v, mean = Σ w·v / Σ w, std the weighted population standard
  deviation, min/max over pixels with w > 0, quantiles per exactextract's weighted
  definition (see ``stats``; like exactextract, truncated to integers on integer bands).

Nodata and NaN pixels never count; ``nodata_count`` reports those inside the zone (weighted
by coverage with ``exact``). Pixels outside the raster are neither: a zone partly off the
raster is measured on its part on the raster, and one wholly off gets count 0 and null
statistics (rasterstats, which reads off-raster cells as nodata, counts them in its
``nodata``; exactextract, like this, ignores them). Always full resolution (overviews are
never read).

Values: a band is reduced as stored (``apply_scale`` applies its scale/offset); an index
is computed on reflectance (scale/offset applied, see ``indices``). Everything is
accumulated in float64; values kept for quantiles are float32 when that is exact.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from geopera_kernel.analytics.base import AnalyticsContext, AnalyticsMethod
from geopera_kernel.analytics.engine import LayerResult, ReduceOptions, ZonesPlan, plan_zones, reduce_groups_in
from geopera_kernel.analytics.geometry import PixelZone, pixel_zones, without_boxes
from geopera_kernel.analytics.indices import get_index
from geopera_kernel.analytics.moments import Moments
from geopera_kernel.analytics.params import (
    DEFAULT_STATS,
    GEOMETRY_FIELD,
    BandMapping,
    Coverage,
    GeoJSONArea,
    HistogramParams,
    HistogramResult,
    IndexName,
    Params,
    Percentile,
    PercentileValue,
    Resolution,
    StatName,
    splittable,
)
from geopera_kernel.analytics.reader import RasterMeta, open_meta, select_asset
from geopera_kernel.analytics.sources import BandSource, IndexSource, PixelSource, band_source
from geopera_kernel.raster.domain_errors import invalid_argument
from geopera_kernel.raster.geo import parse_zones

MAX_MOSAIC_ITEMS = 100


def _untitled(schema: dict[str, Any]) -> None:
    for name in ("item_id", "item_ids"):
        schema["properties"][name].pop("title", None)
        schema["properties"][name].pop("default", None)


EXAMPLE_POLYGON: dict[str, Any] = {
    "type": "Polygon",
    "coordinates": [
        [[14.5585, 45.8705], [14.5660, 45.8705], [14.5660, 45.8765], [14.5585, 45.8765], [14.5585, 45.8705]]
    ],
}


class ZonalStatsParams(Params):
    # Untitled and unbounded in the schema (the validator bounds item_ids): the schema rides in
    # INVALID_ARGUMENT trailers, whose budget a long MISSING_BANDS message nearly fills.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=_untitled)

    item_ids: list[str] = Field(default_factory=list)  # a mosaic (README)
    item_id: str = Field("", validate_default=True)  # after item_ids: its validator reads them
    asset_key: str | None = Field(None, description="Default: the asset with role 'data', else the only one")
    band: int | None = Field(None, ge=1, description="1-based band (exclusive with index_name)")
    index_name: IndexName | None = None
    apply_scale: bool = Field(False, description="With band: apply the band's scale/offset to the values")
    geometry: GeoJSONArea
    stats: list[StatName] = Field(default_factory=lambda: list(DEFAULT_STATS), min_length=1)
    percentiles: list[Percentile] = Field(default_factory=list, max_length=101)
    histogram: HistogramParams | None = None
    coverage: Coverage = Field("center", description="center: rasterstats rule; exact: coverage-weighted")
    all_touched: bool = Field(False, description="With coverage=center: count every pixel the zone touches")
    band_mapping: BandMapping = None

    @field_validator("item_id")
    @classmethod
    def _one_source(cls, value: str, info: ValidationInfo) -> str:
        ids = info.data.get("item_ids")
        if ids is not None and bool(value) == bool(ids):  # None: item_ids is invalid, said there
            raise ValueError("exactly one of item_id and item_ids (a mosaic) is required")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ZonalStatsParams:
        if len(self.item_ids) > MAX_MOSAIC_ITEMS:
            raise ValueError(f"a mosaic takes at most {MAX_MOSAIC_ITEMS} items")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item_ids must not repeat an item")
        if self.item_ids and self.all_touched:
            raise ValueError("all_touched does not apply to a mosaic (item_ids)")
        if (self.band is None) == (self.index_name is None):
            raise ValueError("exactly one of band and index_name is required")
        if self.all_touched and self.coverage == "exact":
            raise ValueError("all_touched only applies to coverage 'center'")
        if self.apply_scale and self.band is None:
            raise ValueError("apply_scale only applies to band")
        if self.band_mapping and self.index_name is None:
            raise ValueError("band_mapping only applies to index_name")
        return self


class ZoneStatistics(BaseModel):
    index: int = Field(description="Position of the zone in the input (features in order)")
    feature_id: str | int | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, float | None] = Field(description="Requested statistics; null when no valid pixel")
    percentiles: list[PercentileValue] = Field(default_factory=list)
    histogram: HistogramResult | None = None
    pixels_read: int = Field(description="Pixels of the zone's bounding window examined")


class ZonalStatsResult(BaseModel):
    item_id: str | None = Field(description="The item measured; null for a mosaic (see item_ids)")
    item_ids: list[str] = Field(default_factory=list, description="A mosaic's items, in priority order")
    asset_key: str
    band: int | None
    index_name: str | None
    bands_used: dict[str, int] = Field(description="Common name -> band index read for the index")
    unit: str | None
    coverage: Coverage
    all_touched: bool
    crs: str
    resolution: Resolution = Field(description="Pixel size used (always full resolution), CRS units")
    pixels_read: int = Field(description="Pixels read from the raster, all zones together")
    zones: list[ZoneStatistics]


def make_source(
    meta: RasterMeta,
    band: int | None,
    index_name: str | None,
    apply_scale: bool,
    band_mapping: dict[str, int | str] | None,
) -> PixelSource:
    if index_name is not None:
        return IndexSource.resolve(meta, get_index(index_name), band_mapping)
    assert band is not None
    return band_source(meta, band, apply_scale)


def source_unit(source: PixelSource) -> str | None:
    if isinstance(source, IndexSource):
        return None  # indices are dimensionless
    band = source.indexes[0]
    scaled = getattr(source, "scaled", False)
    return None if scaled else source.meta.units[band - 1]


def integer_valued(source: PixelSource) -> bool:
    """True when values are a stored integer band as is (no index, no scaling)."""
    return (
        isinstance(source, BandSource)
        and not source.scaled
        and np.dtype(source.meta.dtypes[source.band - 1]).kind in "iub"
    )


def quantiles_of(layer: LayerResult, points: list[float], exact: bool, integer: bool) -> list[float | None]:
    """numpy percentiles (center) or exactextract quantiles (exact) of a zone/layer.

    exactextract returns a quantile in the raster's own data type, so on integer bands its
    interpolated value is truncated toward zero (C++ conversion); exact mode does the same so
    results stay comparable. center mode returns numpy's unrounded interpolation, as rasterstats.
    """
    store = layer.store
    if not points or store is None:
        return [None for _ in points]
    if not exact:
        return store.percentiles(points)
    values = store.weighted_quantiles(points)
    return [None if v is None else float(math.trunc(v)) if integer else v for v in values]


def summarize(
    layer: LayerResult,
    exact: bool,
    stats: list[str],
    percentiles: list[float],
    histogram: HistogramParams | None,
    integer: bool = False,
) -> tuple[dict[str, float | None], list[PercentileValue], HistogramResult | None]:
    """Turn one zone/layer's accumulators into the requested statistics."""
    moments, store = layer.moments, layer.store
    empty = moments.empty
    quantile_points = list(percentiles) + ([50.0] if "median" in stats else [])
    quantiles = quantiles_of(layer, quantile_points, exact, integer)
    values: dict[str, float | None] = {
        "count": moments.weight,
        "nodata_count": moments.nodata,
        "min": None if empty else moments.minimum,
        "max": None if empty else moments.maximum,
        "mean": moments.average,
        "std": moments.std,
        "sum": None if empty else moments.total,
        "median": quantiles[-1] if "median" in stats and quantiles else None,
    }
    result = {name: values[name] for name in stats}
    percentile_values = [
        PercentileValue(percentile=q, value=v) for q, v in zip(percentiles, quantiles[: len(percentiles)], strict=True)
    ]
    histogram_result = None
    if histogram is not None:
        value_range = histogram.range or (None if empty else _default_histogram_range(moments, histogram.bins))
        if value_range is not None and store is not None:
            edges, counts = store.histogram_of(histogram.bins, value_range, weighted=exact)
            histogram_result = HistogramResult(edges=edges, counts=counts)
    return result, percentile_values, histogram_result


def _default_histogram_range(moments: Moments, bins: int) -> tuple[float, float]:
    """The valid values' [min, max] (widened by 0.5 when they are all equal, as NumPy does),
    or INVALID_ARGUMENT when the raster's values span more than bins can split."""
    low, high = moments.minimum, moments.maximum
    if low == high:
        low, high = low - 0.5, high + 0.5
    if not splittable(low, high, bins):
        raise invalid_argument(
            "HISTOGRAM_RANGE_REQUIRED",
            f"the values span {moments.minimum!r}..{moments.maximum!r}, which cannot be split into {bins} bins;"
            " give params.histogram.range",
            field="params.histogram.range",
        )
    return low, high


class ZonalStats(AnalyticsMethod):
    name: ClassVar[str] = "zonal_stats"
    description: ClassVar[str] = (
        "Statistics (count, nodata_count, min, max, mean, std, sum, median, percentiles, histogram) of a "
        "band or spectral index inside each zone of a GeoJSON geometry, at full resolution. coverage "
        "'center' counts pixels whose centre is inside (rasterstats; all_touched counts every touched "
        "pixel); 'exact' weights pixels by the fraction of their area inside (exactextract)."
    )
    input_model: ClassVar[type[BaseModel]] = ZonalStatsParams
    output_model: ClassVar[type[BaseModel]] = ZonalStatsResult
    example: ClassVar[dict[str, Any]] = {
        "item_id": "itm_example",
        "index_name": "NDVI",
        "geometry": EXAMPLE_POLYGON,
        "stats": ["count", "mean", "std", "median"],
        "percentiles": [10, 90],
        "coverage": "exact",
    }

    def item_ids(self, params: Any) -> list[str]:
        return list(params.item_ids) or [params.item_id]

    def _plan(
        self, params: ZonalStatsParams, ctx: AnalyticsContext
    ) -> tuple[list[tuple[PixelSource, list[PixelZone]]], ReduceOptions]:
        """The sources (one per item) and their zones, and the options of a call, from its params
        and the rasters' headers."""
        zones_in = parse_zones(params.geometry, GEOMETRY_FIELD)
        parts: list[tuple[PixelSource, list[PixelZone]]] = []
        for position, item_id in enumerate(self.item_ids(params)):
            meta = open_meta(select_asset(ctx.item(item_id), params.asset_key))
            source = make_source(meta, params.band, params.index_name, params.apply_scale, params.band_mapping)
            zones = pixel_zones(zones_in, meta.crs, meta.transform, meta.width, meta.height)
            if parts:
                zones = _mosaic_zones(parts, source, zones, position)
            parts.append((source, zones))
        keep_values = bool(params.percentiles) or "median" in params.stats or params.histogram is not None
        return parts, ReduceOptions(params.coverage, params.all_touched, keep_values)

    def _planned(self, params: ZonalStatsParams, ctx: AnalyticsContext) -> tuple[list[ZonesPlan], ReduceOptions]:
        """``_plan`` with every source's chunks planned, or the plan ``pixels_to_read`` left for
        these params in the call's ``ctx.plans`` (planning, with the zones' reprojection and a
        small zone's mask, is a share of a small call's time)."""
        kept = ctx.plans.pop(self.name, None)
        if kept is not None and kept[0] is params:
            return kept[1], kept[2]
        parts, options = self._plan(params, ctx)
        return [plan_zones(source, zones, options) for source, zones in parts], options

    def pixels_to_read(self, params: Any, ctx: AnalyticsContext) -> int:
        assert isinstance(params, ZonalStatsParams)
        plans, options = self._planned(params, ctx)
        ctx.plans[self.name] = (params, plans, options)  # for execute, when the call runs
        return sum(plan.pixels for plan in plans)

    def execute(self, params: Any, ctx: AnalyticsContext) -> ZonalStatsResult:
        assert isinstance(params, ZonalStatsParams)
        plans, options = self._planned(params, ctx)
        source = plans[0].source
        meta = source.meta
        outcome = reduce_groups_in(ctx, [plans], options)[0]
        try:
            zone_results = []
            for zone_result in outcome.zones:
                ctx.check_cancelled()
                stats, percentiles, histogram = summarize(
                    zone_result.layers[0],
                    params.coverage == "exact",
                    list(params.stats),
                    list(params.percentiles),
                    params.histogram,
                    all(integer_valued(plan.source) for plan in plans),
                )
                zone = zone_result.zone.zone
                zone_results.append(
                    ZoneStatistics(
                        index=zone_result.zone.index,
                        feature_id=zone.feature_id,
                        properties=zone.properties,
                        stats=stats,
                        percentiles=percentiles,
                        histogram=histogram,
                        pixels_read=zone_result.pixels_read,
                    )
                )
        finally:
            outcome.close()
        x_res, y_res = meta.resolution
        return ZonalStatsResult(
            item_id=params.item_id or None,
            item_ids=list(params.item_ids),
            asset_key=meta.asset_key,
            band=params.band,
            index_name=params.index_name,
            bands_used=source.bands_used if isinstance(source, IndexSource) else {},
            unit=source_unit(source),
            coverage=params.coverage,
            all_touched=params.all_touched,
            crs=meta.crs_string,
            resolution=Resolution(x=x_res, y=y_res),
            pixels_read=outcome.pixels_read,
            zones=zone_results,
        )


def _mosaic_zones(
    earlier: list[tuple[PixelSource, list[PixelZone]]], source: PixelSource, zones: list[PixelZone], position: int
) -> list[PixelZone]:
    """A mosaic tile's zones less the pixels of the tiles before it, after checking it lies on
    their pixel grid and yields the same kind of values (else INVALID_ARGUMENT)."""
    first = earlier[0][0]
    meta, base = source.meta, first.meta
    field = f"params.item_ids[{position}]"
    if meta.crs != base.crs:
        raise invalid_argument(
            "MOSAIC_CRS_MISMATCH", f"the mosaic's items must share one CRS: {meta.crs_string} is not {base.crs_string}",
            field=field,
        )  # fmt: skip
    grid = base.transform
    column, row = ~grid * (meta.transform.c, meta.transform.f)
    aligned = abs(column - round(column)) < 1e-6 and abs(row - round(row)) < 1e-6
    same_pixels = (meta.transform.a, meta.transform.b, meta.transform.d, meta.transform.e) == (
        grid.a,
        grid.b,
        grid.d,
        grid.e,
    )
    if not same_pixels or not aligned:
        raise invalid_argument(
            "MOSAIC_GRID_MISMATCH",
            "the mosaic's items must lie on one pixel grid (same pixel size, origins whole pixels apart)",
            field=field,
        )
    if source.value_dtype != first.value_dtype or source.layers != first.layers:
        raise invalid_argument(
            "MOSAIC_BAND_MISMATCH", "the mosaic's items must give the same kind of values (band data types differ)",
            field=field,
        )  # fmt: skip
    boxes = []
    for other, _ in earlier:
        col0, row0 = (round(v) for v in ~meta.transform * (other.meta.transform.c, other.meta.transform.f))
        boxes.append(shapely.box(col0, row0, col0 + other.meta.width, row0 + other.meta.height))
    return [without_boxes(zone, boxes, meta.width, meta.height) for zone in zones]
