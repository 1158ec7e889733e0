"""Band auto-detection, the index catalogue, exact coverage fractions and pixel areas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from geopera_kernel.analytics.areas import row_areas
from geopera_kernel.analytics.bands import resolve_bands
from geopera_kernel.analytics.coverage import exact_coverage
from geopera_kernel.analytics.indices import INDEX_NAMES, INDICES, get_index
from geopera_kernel.analytics.reader import RasterMeta
from geopera_kernel.server.errors import DomainError


def band(name: str = "", common: str | None = None, sensor: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "common_name": common, "sensor_band_id": sensor, "tags": {}, **extra}


def failure(error: pytest.ExceptionInfo[DomainError]) -> tuple[str, str]:
    return error.value.reason, error.value.violations[0].field


def test_detection_by_name_common_name_and_sensor_id() -> None:
    by_name = [band("blue"), band("Green"), band("RED"), band("near-infrared")]
    assert resolve_bands(["red", "nir"], by_name) == {"red": 3, "nir": 4}
    by_common = [band("b1", "red"), band("b2", "nir")]
    assert resolve_bands(["nir", "red"], by_common) == {"nir": 2, "red": 1}
    sentinel = [band(f"B{n:02d}") for n in (2, 3, 4, 8)] + [band("B8A"), band("B11"), band("B12")]
    assert resolve_bands(["red", "nir", "swir16", "swir22"], sentinel) == {"red": 3, "nir": 4, "swir16": 6, "swir22": 7}
    landsat = [band(sensor=f"SR_B{n}") for n in range(1, 8)]
    # Landsat has no broad NIR: its narrow NIR (nir08, SR_B5) stands in.
    assert resolve_bands(["red", "nir"], landsat) == {"red": 4, "nir": 5}
    # A name match wins over a sensor id elsewhere.
    assert resolve_bands(["red"], [band("red"), band("B04")]) == {"red": 1}


def test_explicit_mapping_overrides_detection() -> None:
    bands = [band("red"), band("x"), band("y", sensor="B08"), band("nir")]
    assert resolve_bands(["red", "nir"], bands, {"nir": 3}) == {"red": 1, "nir": 3}
    assert resolve_bands(["red", "nir"], bands, {"red": "X", "nir": "b08"}) == {"red": 2, "nir": 3}


def test_missing_and_ambiguous_bands() -> None:
    with pytest.raises(DomainError) as error:
        resolve_bands(["red", "nir"], [band("red"), band("green")])
    assert failure(error) == ("MISSING_BANDS", "params.band_mapping")
    assert error.value.metadata["bands_found"] == "1:red, 2:green"
    with pytest.raises(DomainError) as error:
        resolve_bands(["red"], [band("red"), band("Red")])
    assert failure(error) == ("AMBIGUOUS_BANDS", "params.band_mapping")
    with pytest.raises(DomainError) as error:
        resolve_bands(["red"], [band("red")], {"red": 5})
    assert failure(error) == ("MISSING_BANDS", "params.band_mapping.red")
    with pytest.raises(DomainError) as error:
        resolve_bands(["red"], [band("a"), band("a")], {"red": "a"})
    assert failure(error)[0] == "AMBIGUOUS_BANDS"


def test_index_formulas() -> None:
    assert set(INDEX_NAMES) == {"NDVI", "NDWI", "MNDWI", "NDMI", "NBR", "NDBI", "GNDVI", "EVI", "SAVI", "MSAVI"}
    rng = np.random.default_rng(1)
    b = {
        name: rng.uniform(0.01, 0.6, 50).astype(np.float32)
        for name in ("blue", "green", "red", "nir", "swir16", "swir22")
    }
    f = {k: v.astype(np.float64) for k, v in b.items()}
    expected = {
        "NDVI": (f["nir"] - f["red"]) / (f["nir"] + f["red"]),
        "NDWI": (f["green"] - f["nir"]) / (f["green"] + f["nir"]),
        "MNDWI": (f["green"] - f["swir16"]) / (f["green"] + f["swir16"]),
        "NDMI": (f["nir"] - f["swir16"]) / (f["nir"] + f["swir16"]),
        "NBR": (f["nir"] - f["swir22"]) / (f["nir"] + f["swir22"]),
        "NDBI": (f["swir16"] - f["nir"]) / (f["swir16"] + f["nir"]),
        "GNDVI": (f["nir"] - f["green"]) / (f["nir"] + f["green"]),
        "EVI": 2.5 * (f["nir"] - f["red"]) / (f["nir"] + 6 * f["red"] - 7.5 * f["blue"] + 1),
        "SAVI": 1.5 * (f["nir"] - f["red"]) / (f["nir"] + f["red"] + 0.5),
        "MSAVI": (2 * f["nir"] + 1 - np.sqrt((2 * f["nir"] + 1) ** 2 - 8 * (f["nir"] - f["red"]))) / 2,
    }
    for name, values in expected.items():
        index = INDICES[name]
        got = index({k: b[k] for k in index.bands})
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, values, rtol=2e-5, atol=1e-6, err_msg=name)
    zero = np.zeros(3, np.float32)
    assert np.isnan(get_index("ndvi")({"nir": zero, "red": zero})).all()  # 0/0 is NaN, not a warning or inf


def test_exact_coverage_equals_polygon_box_intersections() -> None:
    rng = np.random.default_rng(3)
    shapes = []
    for n in range(12):
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 30)))
        radii = rng.uniform(2, 25, angles.size)
        polygon = shapely.make_valid(
            Polygon(np.column_stack([25 + radii * np.cos(angles), 22 + radii * np.sin(angles)]))
        )
        if n % 3 == 0:
            polygon = polygon.difference(shapely.Point(25.3, 22.1).buffer(4))
        if n % 4 == 0:
            polygon = polygon.union(box(47.3, 3.25, 49.9, 8.1))
        shapes.append(polygon)
    shapes.append(Polygon([(10.2, 10.3), (10.6, 10.35), (10.4, 10.8)]))  # inside one pixel
    shapes.append(box(3, 4, 9, 12))  # edges on pixel boundaries
    shapes.append(box(3.5, 4.25, 9.5, 12.75))  # vertical edges inside pixels: partly covered columns
    shapes.append(box(-5.3, -7.1, 80.7, 90.2).difference(box(20.5, 11, 30.5, 19.5)))  # beyond the window
    shapes.append(Polygon([(2.5, 1), (2.5, 39.5), (2.75, 39.5), (2.75, 1)]))  # thinner than a pixel
    for polygon in shapes:
        row0, col0, rows, cols = int(rng.integers(0, 10)), int(rng.integers(0, 10)), 40, 45
        got = exact_coverage(polygon, row0, col0, rows, cols)
        cells = shapely.box(
            *np.meshgrid(np.arange(col0, col0 + cols), np.arange(row0, row0 + rows)),
            *np.meshgrid(np.arange(col0 + 1, col0 + cols + 1), np.arange(row0 + 1, row0 + rows + 1)),
        )
        expected = shapely.area(shapely.intersection(cells, polygon))
        np.testing.assert_allclose(got, expected, atol=1e-9)


def _meta(crs: str, transform: Affine) -> RasterMeta:
    return RasterMeta(
        "x",
        "data",
        10,
        10,
        1,
        transform,
        CRS.from_user_input(crs),
        (10, 10),
        ("uint8",),
        (None,),
        (1.0,),
        (0.0,),
        (None,),
        ("",),
        ({},),
        ({},),
    )


def test_pixel_areas() -> None:
    assert row_areas(_meta("EPSG:32633", Affine(10, 0, 0, 0, -10, 0)), 0, 3).tolist() == [100.0] * 3
    feet = row_areas(_meta("EPSG:2263", Affine(1, 0, 0, 0, -1, 0)), 0, 1)[0]  # NY state plane, US feet
    assert feet == pytest.approx(0.3048006096**2, rel=1e-9)
    # A 1° x 1° WGS 84 cell at the equator, against a geodesic polygon whose parallels are
    # densified (so its geodesic edges follow them).
    equator = row_areas(_meta("EPSG:4326", Affine(1, 0, 0, 0, -1, 1)), 0, 1)[0]
    lons = np.linspace(0, 1, 2001)
    reference = abs(
        Geod(ellps="WGS84").polygon_area_perimeter(
            np.concatenate([lons, lons[::-1]]), np.concatenate([np.zeros_like(lons), np.ones_like(lons)])
        )[0]
    )
    assert equator == pytest.approx(reference, rel=1e-8)
    rows = row_areas(_meta("EPSG:4326", Affine(1, 0, 0, 0, -1, 90)), 0, 90)
    # The whole northern hemisphere per degree of longitude: half the ellipsoid's area / 360.
    assert rows.sum() * 360 * 2 == pytest.approx(510_065_621_724_088, rel=1e-9)
    assert rows[0] < rows[-1] and math.isfinite(rows[0])
    with pytest.raises(DomainError):
        row_areas(_meta("EPSG:4326", Affine(1, 0.1, 0, 0, -1, 1)), 0, 1)
