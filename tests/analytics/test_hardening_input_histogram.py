"""Histograms over rasters whose values NumPy cannot bin by default (issue 10, hole 5):
a client's raster may hold values from -1e308 to 1e308; the default range (the values'
min..max) then has no representable bin width, which is a clear INVALID_ARGUMENT naming
`params.histogram.range`, and an explicit range still works."""

from __future__ import annotations

import numpy as np
import pytest

from geopera_kernel.analytics import default_registry
from geopera_kernel.server.errors import Code, DomainError
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, ContextFactory, RasterWriter, lonlat_polygon, make_item


@pytest.fixture
def extreme_item(write_raster: RasterWriter):
    values = np.full((20, 20), 1.0, dtype=np.float64)
    values[0, 0], values[19, 19] = -1e308, 1e308
    return make_item("extreme", write_raster("extreme.tif", values))


def _zone() -> dict:
    corners = [(0.0, 0.0), (20.0, 0.0), (20.0, 20.0), (0.0, 20.0)]
    return {"type": "Polygon", "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, corners)]}


def test_values_too_far_apart_for_the_default_bins_ask_for_a_range(extreme_item, make_context: ContextFactory):
    context = make_context([extreme_item])
    params = {"item_id": "extreme", "band": 1, "geometry": _zone(), "histogram": {"bins": 10}}
    with pytest.raises(DomainError) as info:
        default_registry().run("zonal_stats", params, context)
    assert (info.value.code, info.value.reason) == (Code.INVALID_ARGUMENT, "HISTOGRAM_RANGE_REQUIRED")
    assert info.value.violations[0].field == "params.histogram.range"
    ranged = {**params, "histogram": {"bins": 4, "range": [0.0, 2.0]}}
    histogram = default_registry().run("zonal_stats", ranged, context)["zones"][0]["histogram"]
    assert histogram["counts"] == [0.0, 0.0, 398.0, 0.0]


def test_equal_values_get_numpys_half_unit_range(write_raster: RasterWriter, make_context: ContextFactory):
    item = make_item("flat", write_raster("flat.tif", np.full((20, 20), 7.0, dtype=np.float64)))
    params = {"item_id": "flat", "band": 1, "geometry": _zone(), "histogram": {"bins": 2}}
    histogram = default_registry().run("zonal_stats", params, make_context([item]))["zones"][0]["histogram"]
    assert histogram["edges"] == [6.5, 7.0, 7.5] and histogram["counts"] == [0.0, 400.0]
