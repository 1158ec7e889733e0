"""``time_series``: one value per date over an area, from a multi-date stack or several items.

(a) ``item_id``: the asset's bands are time steps (a stack such as 68 NDVI dates). Each
    band's datetime comes from its name (GDAL description) when that is an ISO 8601 datetime,
    else from its ACQUISITION_DATETIME or DATETIME tag. All steps are reduced in one pass over
    the pixels (every chunk is decoded once for all bands).
(b) ``item_ids``: one step per item at the item's datetime, each item reduced with ``band`` or
    ``index_name``.

The zones of ``geometry`` are merged into one area. Steps are sorted by time; a step without
any valid pixel in the area (clouds, nodata) is reported with value null, not dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from geopera_kernel.analytics.base import AnalyticsContext, AnalyticsMethod, ItemView
from geopera_kernel.analytics.engine import LayerResult, ReduceOptions, planned_pixels, reduce_groups_in, reduce_in
from geopera_kernel.analytics.geometry import PixelZone, pixel_zones
from geopera_kernel.analytics.params import (
    GEOMETRY_FIELD,
    BandMapping,
    Coverage,
    GeoJSONArea,
    IndexName,
    Params,
    Percentile,
    Resolution,
    UtcDatetime,
)
from geopera_kernel.analytics.reader import RasterMeta, open_meta, select_asset
from geopera_kernel.analytics.sources import PixelSource, StackSource
from geopera_kernel.analytics.zonal import (
    EXAMPLE_POLYGON,
    integer_valued,
    make_source,
    quantiles_of,
    source_unit,
)
from geopera_kernel.raster.domain_errors import invalid_argument
from geopera_kernel.raster.geo import Zone, parse_area

Reducer = Literal["mean", "median", "min", "max", "percentile"]
_DATETIME_TAGS = ("ACQUISITION_DATETIME", "DATETIME")
_MAX_ITEMS = 1000


class TimeSeriesParams(Params):
    item_id: str | None = Field(None, min_length=1, description="(a) one item whose bands are time steps")
    item_ids: list[str] | None = Field(
        None, min_length=1, max_length=_MAX_ITEMS, description="(b) one step per item, at the item's datetime"
    )
    asset_key: str | None = Field(None, description="Default: the asset with role 'data', else the only one")
    band: int | None = Field(None, ge=1, description="(b) 1-based band (exclusive with index_name)")
    index_name: IndexName | None = None
    geometry: GeoJSONArea
    reducer: Reducer = "mean"
    percentile: Percentile | None = Field(None, description="Required with reducer 'percentile'")
    start: UtcDatetime | None = Field(None, description="Keep steps at or after this time")
    end: UtcDatetime | None = Field(None, description="Keep steps at or before this time")
    coverage: Coverage = "center"
    band_mapping: BandMapping = None

    @model_validator(mode="after")
    def _consistent(self) -> TimeSeriesParams:
        if (self.item_id is None) == (self.item_ids is None):
            raise ValueError("exactly one of item_id and item_ids is required")
        if self.item_id is not None and (self.band is not None or self.index_name is not None):
            raise ValueError("with item_id every band is a time step: band and index_name need item_ids")
        if self.item_ids is not None:
            if (self.band is None) == (self.index_name is None):
                raise ValueError("with item_ids exactly one of band and index_name is required")
            if len(set(self.item_ids)) != len(self.item_ids):
                raise ValueError("item_ids must not repeat")
        if (self.reducer == "percentile") != (self.percentile is not None):
            raise ValueError("percentile is required with reducer 'percentile' and only then")
        if self.band_mapping and self.index_name is None:
            raise ValueError("band_mapping only applies to index_name")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class TimeStep(BaseModel):
    datetime: dt.datetime
    value: float | None = Field(description="The reducer's value; null when no valid pixel")
    count: float = Field(description="Valid pixels (coverage-weighted with exact coverage)")
    nodata_count: float
    item_id: str
    band: int | None = Field(description="Band of the step (stack) or the band reduced")
    resolution: Resolution


class TimeSeriesResult(BaseModel):
    reducer: Reducer
    percentile: float | None
    band: int | None
    index_name: str | None
    unit: str | None
    coverage: Coverage
    pixels_read: int
    steps: list[TimeStep]


def parse_datetime(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def band_datetime(meta: RasterMeta, band: int) -> dt.datetime | None:
    info: Mapping[str, Any] = meta.bands[band - 1]
    tags = {**meta.band_tags[band - 1], **(info.get("tags") or {})}
    candidates = [info.get("name") or "", meta.descriptions[band - 1]]
    candidates += [tags.get(tag, "") for tag in _DATETIME_TAGS]
    for text in candidates:
        if text and (value := parse_datetime(str(text))) is not None:
            return value
    return None


def _in_range(when: dt.datetime, params: TimeSeriesParams) -> bool:
    return (params.start is None or when >= params.start) and (params.end is None or when <= params.end)


def _reduce(layer: LayerResult, params: TimeSeriesParams, integer: bool) -> float | None:
    moments = layer.moments
    if moments.empty:
        return None
    if params.reducer == "mean":
        return moments.average
    if params.reducer == "min":
        return moments.minimum
    if params.reducer == "max":
        return moments.maximum
    q = 50.0 if params.reducer == "median" else float(params.percentile or 0.0)
    return quantiles_of(layer, [q], params.coverage == "exact", integer)[0]


class TimeSeries(AnalyticsMethod):
    name: ClassVar[str] = "time_series"
    description: ClassVar[str] = (
        "One value per date (mean, median, min, max or a percentile) of a band or spectral index over "
        "an area: from one item whose bands are dates (item_id), or from several items (item_ids). "
        "Steps are sorted by time; steps without valid pixels have value null."
    )
    input_model: ClassVar[type[BaseModel]] = TimeSeriesParams
    output_model: ClassVar[type[BaseModel]] = TimeSeriesResult
    example: ClassVar[dict[str, Any]] = {
        "item_id": "itm_ndvi_stack",
        "geometry": EXAMPLE_POLYGON,
        "reducer": "median",
        "start": "2015-07-01T00:00:00Z",
        "end": "2015-12-31T23:59:59Z",
    }

    def item_ids(self, params: Any) -> list[str]:
        assert isinstance(params, TimeSeriesParams)
        return [params.item_id] if params.item_id is not None else list(params.item_ids or [])

    def pixels_to_read(self, params: Any, ctx: AnalyticsContext) -> int:
        assert isinstance(params, TimeSeriesParams)
        return self._steps(params, ctx, count_only=True)[1]

    def _steps(
        self, params: TimeSeriesParams, ctx: AnalyticsContext, *, count_only: bool = False
    ) -> tuple[list[TimeStep], int, str | None]:
        """The steps, pixels read and unit; `count_only`: no step, the pixels the reads would take."""
        area = Zone(parse_area(params.geometry, GEOMETRY_FIELD))
        keep_values = params.reducer in ("median", "percentile")
        options = ReduceOptions(params.coverage, False, keep_values)
        if params.item_id is not None:
            return self._stack(params, ctx, area, options, count_only)
        return self._items(params, ctx, area, options, count_only)

    def execute(self, params: Any, ctx: AnalyticsContext) -> TimeSeriesResult:
        assert isinstance(params, TimeSeriesParams)
        steps, pixels, unit = self._steps(params, ctx)
        steps.sort(key=lambda step: (step.datetime, step.band or 0, step.item_id))
        return TimeSeriesResult(
            reducer=params.reducer,
            percentile=params.percentile,
            band=params.band,
            index_name=params.index_name,
            unit=unit,
            coverage=params.coverage,
            pixels_read=pixels,
            steps=steps,
        )

    def _stack(
        self, params: TimeSeriesParams, ctx: AnalyticsContext, area: Zone, options: ReduceOptions, count_only: bool
    ) -> tuple[list[TimeStep], int, str | None]:
        assert params.item_id is not None
        item = ctx.item(params.item_id)
        meta = open_meta(select_asset(item, params.asset_key))
        dates = {band: band_datetime(meta, band) for band in range(1, meta.count + 1)}
        undated = [band for band, when in dates.items() if when is None]
        if undated:
            raise invalid_argument(
                "MISSING_DATETIME",
                f"bands {undated[:10]} of {item.id!r} have no datetime (an ISO 8601 band name or an "
                "ACQUISITION_DATETIME/DATETIME band tag); a single item needs one per band",
                field="params.item_id",
            )
        bands = [band for band, when in dates.items() if when is not None and _in_range(when, params)]
        if not bands:
            return [], 0, meta.units[0]
        source = StackSource(meta, tuple(bands))
        zones = pixel_zones([area], meta.crs, meta.transform, meta.width, meta.height)
        if count_only:
            return [], planned_pixels(source, zones, options), meta.units[bands[0] - 1]
        outcome = reduce_in(ctx, source, zones, options)
        resolution = Resolution(x=meta.resolution[0], y=meta.resolution[1])
        integer = all(np.dtype(meta.dtypes[b - 1]).kind in "iub" for b in bands)
        try:
            steps = []
            for band, layer in zip(bands, outcome.zones[0].layers, strict=True):
                when = dates[band]
                assert when is not None
                steps.append(
                    TimeStep(
                        datetime=when,
                        value=_reduce(layer, params, integer),
                        count=layer.moments.weight,
                        nodata_count=layer.moments.nodata,
                        item_id=item.id,
                        band=band,
                        resolution=resolution,
                    )
                )
        finally:
            outcome.close()
        return steps, outcome.pixels_read, meta.units[bands[0] - 1]

    def _items(
        self, params: TimeSeriesParams, ctx: AnalyticsContext, area: Zone, options: ReduceOptions, count_only: bool
    ) -> tuple[list[TimeStep], int, str | None]:
        unit: str | None = None
        planned: list[tuple[ItemView, dt.datetime, PixelSource, list[PixelZone]]] = []
        for position, item_id in enumerate(params.item_ids or []):
            ctx.check_cancelled()
            item = ctx.item(item_id)
            if item.datetime is None:
                raise invalid_argument(
                    "MISSING_DATETIME", f"item {item_id!r} has no datetime", field=f"params.item_ids[{position}]"
                )
            when = item.datetime if item.datetime.tzinfo else item.datetime.replace(tzinfo=dt.UTC)
            if not _in_range(when, params):
                continue
            meta = open_meta(select_asset(item, params.asset_key))
            source = make_source(meta, params.band, params.index_name, False, params.band_mapping)
            unit = source_unit(source)
            planned.append((item, when, source, pixel_zones([area], meta.crs, meta.transform, meta.width, meta.height)))
        if count_only:
            return [], sum(planned_pixels(source, zones, options) for _, _, source, zones in planned), unit
        # Every item's chunks in one run: on a cluster they are computed side by side.
        outcomes = reduce_groups_in(ctx, [[(source, zones)] for _, _, source, zones in planned], options)
        steps: list[TimeStep] = []
        try:
            for (item, when, source, _), outcome in zip(planned, outcomes, strict=True):
                layer = outcome.zones[0].layers[0]
                meta = source.meta
                steps.append(
                    TimeStep(
                        datetime=when,
                        value=_reduce(layer, params, integer_valued(source)),
                        count=layer.moments.weight,
                        nodata_count=layer.moments.nodata,
                        item_id=item.id,
                        band=params.band,
                        resolution=Resolution(x=meta.resolution[0], y=meta.resolution[1]),
                    )
                )
        finally:
            for outcome in outcomes:
                outcome.close()
        return steps, sum(outcome.pixels_read for outcome in outcomes), unit
