"""geopera_kernel.raster.geo: an AOI parsed once carries its geodesic area and CRS; GeoJSON out is RFC 7946."""

from __future__ import annotations

import pytest
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.polygon import orient

from geopera_kernel.raster.domain_errors import DomainError
from geopera_kernel.raster.geo import LONLAT, NotInCrs, geodesic_area_km2, parse_aoi, to_crs, to_geojson

# About 1.1 km x 0.78 km near Ljubljana, clockwise (RFC 7946 wants counter-clockwise).
CLOCKWISE = [[14.50, 46.05], [14.50, 46.06], [14.51, 46.06], [14.51, 46.05], [14.50, 46.05]]


def test_an_aoi_carries_its_geometry_geodesic_area_and_crs() -> None:
    aoi = parse_aoi({"type": "Polygon", "coordinates": [CLOCKWISE]}, "aoi_geometry")
    expected = abs(Geod(ellps="WGS84").geometry_area_perimeter(Polygon(CLOCKWISE))[0]) / 1e6
    assert aoi.crs == LONLAT == "EPSG:4326"
    assert aoi.geometry.equals(Polygon(CLOCKWISE))
    assert aoi.area_km2 == pytest.approx(expected, rel=1e-12)
    assert 0.8 < aoi.area_km2 < 0.9


def test_an_aoi_within_a_footprint_is_the_overlap_or_none() -> None:
    aoi = parse_aoi({"type": "Polygon", "coordinates": [CLOCKWISE]}, "aoi_geometry")
    half = aoi.within(box(14.50, 46.05, 14.505, 46.06))
    assert half is not None
    assert half.area_km2 == pytest.approx(aoi.area_km2 / 2, rel=1e-3)
    # Touching along an edge only: no area to clip or to price.
    assert aoi.within(box(14.51, 46.05, 14.52, 46.06)) is None
    assert aoi.within(box(0, 0, 1, 1)) is None


def test_parsing_errors_name_the_member_and_repair_is_opt_in() -> None:
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    with pytest.raises(DomainError) as caught:
        parse_aoi({"type": "Polygon", "coordinates": [bowtie]}, "aoi_geometry")
    assert caught.value.reason == "INVALID_GEOMETRY"
    assert caught.value.violations[0].field == "aoi_geometry"
    repaired = parse_aoi({"type": "Polygon", "coordinates": [bowtie]}, "aoi_geometry", repair=True)
    assert repaired.geometry.is_valid and repaired.area_km2 > 0


def test_geojson_out_is_counter_clockwise_plain_lists_and_polygonal_only() -> None:
    out = to_geojson(Polygon(CLOCKWISE))
    assert out["type"] == "Polygon"
    assert isinstance(out["coordinates"], list) and isinstance(out["coordinates"][0][0], list)
    assert orient(shape(out), sign=1.0).exterior.coords[:] == shape(out).exterior.coords[:]
    touching = box(0, 0, 1, 1).intersection(box(1, 0, 2, 1).union(box(0.5, 0.5, 0.7, 0.7)))
    assert to_geojson(touching)["type"] == "Polygon"
    two = MultiPolygon([box(0, 0, 1, 1), box(2, 0, 3, 1)])
    assert to_geojson(two)["type"] == "MultiPolygon"
    assert geodesic_area_km2(Polygon()) == 0.0


def test_reprojection_densifies_edges_and_refuses_what_the_crs_cannot_hold() -> None:
    projected = to_crs(Polygon(CLOCKWISE), "EPSG:32633")
    west, south, _, _ = projected.bounds
    assert 460_000 < west < 470_000 and 5_090_000 < south < 5_110_000
    longer = to_crs(Polygon([[14.0, 46.0], [14.0, 46.1], [14.1, 46.1], [14.1, 46.0], [14.0, 46.0]]), "EPSG:32633")
    # Four 0.1° edges in segments of at most 0.01°: at least 10 each, plus the closing vertex.
    assert len(longer.exterior.coords) >= 4 * 10 + 1
    # A geostationary view over lon 0 sees no point of the far side of the globe.
    geostationary = "+proj=geos +h=35785831 +lon_0=0 +type=crs"
    assert to_crs(box(0, 0, 1, 1), geostationary).bounds[2] == pytest.approx(111_310, abs=1)
    with pytest.raises(NotInCrs):
        to_crs(box(170, 0, 171, 1), geostationary)
