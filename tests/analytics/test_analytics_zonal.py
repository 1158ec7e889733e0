"""zonal_stats against the reference implementations.

``center`` must equal rasterstats and ``exact`` must equal exactextract (count, sum, mean,
min, max, std to 1e-6 relative; median and percentiles per each library's definition), on
the real Sentinel-2 sample with its 88 land-cover zones and on generated rasters with
nodata, NaN, holes, zones partly or wholly off the raster and a zone smaller than a pixel.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from exactextract import exact_extract
from rasterstats import zonal_stats
from shapely.geometry import box, mapping

from geopera_kernel.analytics import engine, quantiles, registry
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, ContextFactory, RasterWriter, lonlat_polygon, make_item
from tests.support.reference_geometry import lonlat_zones, reproject

ALL_STATS = ["count", "nodata_count", "min", "max", "mean", "std", "sum", "median"]
PERCENTILES = [0.0, 10.0, 37.5, 90.0, 100.0]
EXACT_OPS = ["count", "sum", "mean", "min", "max", "stdev", "median", *[f"quantile(q={q / 100})" for q in PERCENTILES]]


def close(actual: float | None, expected: float | None, rel: float = 1e-6, floor: float = 1e-7) -> bool:
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return actual is None
    if actual is None:
        return False
    return abs(actual - expected) <= max(rel * abs(expected), floor)


def rasterstats_oracle(
    values: np.ndarray, transform: Any, nodata: float | None, geometries: list[Any], all_touched: bool = False
) -> list[dict[str, Any]]:
    wanted = [
        "count",
        "min",
        "max",
        "mean",
        "std",
        "sum",
        "median",
        "nodata",
        "nan",
        *[f"percentile_{q:g}" for q in PERCENTILES],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterstats warns about masked elements
        return zonal_stats(geometries, values, affine=transform, nodata=nodata, stats=wanted, all_touched=all_touched)


def exactextract_oracle(path: Path, geometries: list[Any]) -> list[dict[str, Any]]:
    features = [
        {"type": "Feature", "properties": {"zone": i}, "geometry": mapping(g)} for i, g in enumerate(geometries)
    ]
    rows = exact_extract(str(path), features, EXACT_OPS)
    return [row["properties"] for row in rows]


def single_band_file(tmp_path: Path, name: str, values: np.ndarray, reference: Path, nodata: float | None) -> Path:
    with rasterio.open(reference) as src:
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": values.dtype,
            "crs": src.crs,
            "transform": src.transform,
            "nodata": nodata,
        }
    path = tmp_path / name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def zone_geometries(geojson: dict[str, Any], crs: Any) -> list[Any]:
    return [reproject(zone, crs) for zone in lonlat_zones(geojson)]


def wholly_inside(geometries: list[Any], path: Path) -> list[bool]:
    with rasterio.open(path) as dataset:
        footprint = box(*dataset.bounds)
    return [bool(footprint.contains(g)) for g in geometries]


def check_center(result: dict[str, Any], oracle: list[dict[str, Any]], *, inside: list[bool] | None = None) -> None:
    """``inside``: zones wholly on the raster, whose nodata counts are comparable (rasterstats
    also counts the off-raster cells of a zone as nodata)."""
    assert len(result["zones"]) == len(oracle)
    for position, (zone, expected) in enumerate(zip(result["zones"], oracle, strict=True)):
        got = zone["stats"]
        assert got["count"] == expected["count"], zone["index"]
        if expected["count"] == 0:
            assert all(got[k] is None for k in ("min", "max", "mean", "std", "sum", "median")), zone
            continue
        for ours, theirs in [
            ("min", "min"),
            ("max", "max"),
            ("mean", "mean"),
            ("std", "std"),
            ("sum", "sum"),
            ("median", "median"),
        ]:
            assert close(got[ours], expected[theirs]), (zone["index"], ours, got[ours], expected[theirs])
        for item in zone["percentiles"]:
            key = f"percentile_{item['percentile']:g}"
            assert close(item["value"], expected[key]), (zone["index"], key, item["value"], expected[key])
        if inside is None or inside[position]:
            assert got["nodata_count"] == expected["nodata"] + expected.get("nan", 0), zone["index"]


def check_exact(result: dict[str, Any], oracle: list[dict[str, Any]]) -> None:
    assert len(result["zones"]) == len(oracle)
    for zone, expected in zip(result["zones"], oracle, strict=True):
        got = zone["stats"]
        assert close(got["count"], expected["count"]), (zone["index"], got["count"], expected["count"])
        if expected["count"] == 0:
            assert all(got[k] is None for k in ("min", "max", "mean", "std", "sum", "median")), zone
            continue
        for ours, theirs in [
            ("min", "min"),
            ("max", "max"),
            ("mean", "mean"),
            ("std", "stdev"),
            ("sum", "sum"),
            ("median", "median"),
        ]:
            assert close(got[ours], expected[theirs]), (zone["index"], ours, got[ours], expected[theirs])
        for item in zone["percentiles"]:
            key = f"quantile_{int(item['percentile'])}"  # exactextract truncates the name
            assert close(item["value"], expected[key]), (zone["index"], key, item["value"], expected[key])


def run_zonal(ctx: Any, **params: Any) -> dict[str, Any]:
    return registry.run("zonal_stats", {"stats": ALL_STATS, "percentiles": PERCENTILES, **params}, ctx)


# -- the real Sentinel-2 sample, 88 land-cover zones ---------------------------------------------


@pytest.fixture(scope="module")
def s2_arrays(sample_dir: Path) -> tuple[np.ndarray, Any, Any]:
    with rasterio.open(sample_dir / "s2l1c_slovenia_20150711_bgrn.tif") as dataset:
        return dataset.read(), dataset.transform, dataset.crs


def s2_ndvi(raw: np.ndarray) -> np.ndarray:
    """NDVI of reflectance (DN * 1e-4), in float32 as the server computes it; NaN where undefined."""
    red, nir = raw[2].astype(np.float32) * np.float32(1e-4), raw[3].astype(np.float32) * np.float32(1e-4)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (nir - red) / (nir + red)
    values[(nir + red) == 0] = np.nan
    return values


def test_s2_ndvi_center_equals_rasterstats(
    s2_items: dict, s2_arrays: tuple, lulc_zones: dict, make_context: ContextFactory
) -> None:
    raw, transform, crs = s2_arrays
    result = run_zonal(make_context(s2_items), item_id="s2_20150711", index_name="ndvi", geometry=lulc_zones)
    assert len(result["zones"]) == 88
    assert result["bands_used"] == {"nir": 4, "red": 3}
    assert result["resolution"]["x"] == pytest.approx(9.99479222007154)
    geometries = zone_geometries(lulc_zones, crs)
    oracle = rasterstats_oracle(s2_ndvi(raw), transform, np.nan, geometries)
    inside = wholly_inside(geometries, s2_items["s2_20150711"].assets["data"].path)
    assert 10 < sum(inside) < 88
    check_center(result, oracle, inside=inside)
    assert result["zones"][0]["properties"]["LULC_NAME"] == "grassland"


def test_s2_ndvi_exact_equals_exactextract(
    s2_items: dict, s2_arrays: tuple, lulc_zones: dict, tmp_path: Path, sample_dir: Path, make_context: ContextFactory
) -> None:
    raw, _, crs = s2_arrays
    path = single_band_file(tmp_path, "ndvi.tif", s2_ndvi(raw), sample_dir / "s2l1c_slovenia_20150711_bgrn.tif", np.nan)
    result = run_zonal(
        make_context(s2_items), item_id="s2_20150711", index_name="NDVI", geometry=lulc_zones, coverage="exact"
    )
    check_exact(result, exactextract_oracle(path, zone_geometries(lulc_zones, crs)))


@pytest.mark.parametrize("coverage", ["center", "exact"])
def test_s2_raw_band_equals_references(
    coverage: str,
    s2_items: dict,
    s2_arrays: tuple,
    lulc_zones: dict,
    tmp_path: Path,
    sample_dir: Path,
    make_context: ContextFactory,
) -> None:
    raw, transform, crs = s2_arrays
    result = run_zonal(make_context(s2_items), item_id="s2_20150711", band=3, geometry=lulc_zones, coverage=coverage)
    assert result["unit"] == "reflectance*10000" and result["band"] == 3
    geometries = zone_geometries(lulc_zones, crs)
    if coverage == "center":
        check_center(
            result,
            rasterstats_oracle(raw[2], transform, 0, geometries),
            inside=wholly_inside(geometries, s2_items["s2_20150711"].assets["data"].path),
        )
    else:
        path = single_band_file(tmp_path, "red.tif", raw[2], sample_dir / "s2l1c_slovenia_20150711_bgrn.tif", 0)
        check_exact(result, exactextract_oracle(path, geometries))


def test_s2_all_touched_equals_rasterstats(
    s2_items: dict, s2_arrays: tuple, lulc_zones: dict, make_context: ContextFactory
) -> None:
    raw, transform, crs = s2_arrays
    result = run_zonal(make_context(s2_items), item_id="s2_20150711", band=4, geometry=lulc_zones, all_touched=True)
    geometries = zone_geometries(lulc_zones, crs)
    check_center(
        result,
        rasterstats_oracle(raw[3], transform, 0, geometries, all_touched=True),
        inside=wholly_inside(geometries, s2_items["s2_20150711"].assets["data"].path),
    )


def test_execute_takes_the_plan_pixels_to_read_made(
    s2_items: dict, lulc_zones: dict, make_context: ContextFactory
) -> None:
    """The server asks pixels_to_read (its synchronous limit) then execute with the same params,
    their contexts sharing the call's ``plans``: execute reads that plan (its pixels are the count
    announced, its answer the same as a fresh call's) once, and only for the params it was made
    for; a context without it plans afresh."""
    params = {"stats": ALL_STATS, "item_id": "s2_20150711", "index_name": "NDVI", "geometry": lulc_zones}
    fresh = registry.run("zonal_stats", params, make_context(s2_items))
    ctx = make_context(s2_items)
    model = registry.validate("zonal_stats", params)
    pixels = registry.pixels_to_read("zonal_stats", model, ctx)
    kept = ctx.plans["zonal_stats"]
    assert kept[0] is model and sum(plan.pixels for plan in kept[1]) == pixels
    run_ctx = make_context(s2_items)
    run_ctx.plans = ctx.plans  # one call's two contexts, as the server makes them
    result = registry.run("zonal_stats", params, run_ctx, validated=model)
    assert "zonal_stats" not in ctx.plans  # taken once
    assert result == fresh
    assert result["pixels_read"] == pixels
    # A plan left for other params (a model validated again) is not taken: planned afresh.
    registry.pixels_to_read("zonal_stats", model, ctx)
    other = registry.validate("zonal_stats", {**params, "item_id": "s2_20150731"})
    other_result = registry.run("zonal_stats", params, ctx, validated=other)
    assert other_result == registry.run("zonal_stats", {**params, "item_id": "s2_20150731"}, make_context(s2_items))
    assert other_result != fresh


# -- generated rasters: nodata, NaN, holes, off-raster and sub-pixel zones -----------------------

ROWS, COLS = 60, 70


def synthetic_values() -> np.ndarray:
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    values = (np.sin(rows / 7.0) * 40 + np.cos(cols / 5.0) * 25 + rows * 0.7).astype(np.float32)
    values = np.round(values * 4) / 4  # repeated values exercise exactextract's merging of equal values
    values[20:26, 8:15] = np.nan
    values[40:47, 30:41] = -9999.0
    return values.astype(np.float32)


def synthetic_zones() -> dict[str, Any]:
    def ring(points: list[tuple[float, float]]) -> list[list[float]]:
        return lonlat_polygon(UTM33_TRANSFORM, UTM33, points)

    outer = [(3.3, 4.7), (25.6, 4.2), (27.1, 22.8), (2.9, 21.5)]
    hole = [(10.2, 9.1), (17.9, 15.3), (11.1, 14.2)]
    second = [(35.2, 30.4), (45.7, 31.1), (44.3, 44.8), (36.6, 48.2)]
    second_hole = [(38.1, 34.2), (42.4, 34.9), (41.0, 39.6)]
    features = [
        {"type": "MultiPolygon", "coordinates": [[ring(outer), ring(hole)], [ring(second), ring(second_hole)]]},
        {"type": "Polygon", "coordinates": [ring([(55.5, -5.3), (80.2, -4.1), (78.6, 20.7), (56.1, 18.2)])]},
        {"type": "Polygon", "coordinates": [ring([(12.1, 40.1), (12.42, 40.15), (12.2, 40.45)])]},
        {"type": "Polygon", "coordinates": [ring([(20.2, 30.2), (20.8, 30.35), (20.55, 30.9)])]},
        {"type": "Polygon", "coordinates": [ring([(200.0, 200.0), (210.0, 200.0), (205.0, 210.0)])]},
        {"type": "Polygon", "coordinates": [ring([(5.5, 17.5), (33.3, 36.6), (28.7, 52.4), (4.1, 58.8)])]},
    ]
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": f"z{i}", "properties": {"n": i}, "geometry": g} for i, g in enumerate(features)
        ],
    }


@pytest.fixture
def synthetic_item(write_raster: RasterWriter) -> tuple[Any, np.ndarray, Path]:
    values = synthetic_values()
    path = write_raster("synthetic.tif", values, nodata=-9999.0, descriptions=["elevation"])
    return make_item("synthetic", path), values, path


@pytest.mark.parametrize("all_touched", [False, True])
def test_generated_center_equals_rasterstats(
    all_touched: bool, synthetic_item: tuple, make_context: ContextFactory
) -> None:
    item, values, _ = synthetic_item
    zones = synthetic_zones()
    result = run_zonal(make_context([item]), item_id="synthetic", band=1, geometry=zones, all_touched=all_touched)
    geometries = zone_geometries(zones, UTM33)
    oracle = rasterstats_oracle(values, UTM33_TRANSFORM, -9999.0, geometries, all_touched)
    check_center(result, oracle, inside=wholly_inside(geometries, item.assets["data"].path))
    by_id = {z["feature_id"]: z for z in result["zones"]}
    assert by_id["z4"]["stats"]["count"] == 0 and by_id["z4"]["pixels_read"] == 0  # wholly off the raster
    assert by_id["z0"]["stats"]["nodata_count"] > 0  # crosses the NaN patch
    if not all_touched:
        assert by_id["z2"]["stats"]["count"] == 0  # smaller than a pixel, misses its centre
        assert by_id["z3"]["stats"]["count"] == 1  # smaller than a pixel, covers its centre


def test_generated_exact_equals_exactextract(synthetic_item: tuple, make_context: ContextFactory) -> None:
    item, _, path = synthetic_item
    zones = synthetic_zones()
    result = run_zonal(make_context([item]), item_id="synthetic", band=1, geometry=zones, coverage="exact")
    check_exact(result, exactextract_oracle(path, zone_geometries(zones, UTM33)))
    by_id = {z["feature_id"]: z for z in result["zones"]}
    assert 0 < by_id["z2"]["stats"]["count"] < 1  # the sub-pixel zone's area fraction
    assert by_id["z4"]["stats"]["count"] == 0 and by_id["z4"]["stats"]["mean"] is None


def test_exact_strips_with_and_without_boundary_pixels(
    synthetic_item: tuple, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zone with pixel-aligned sides and mid-pixel top and bottom, cut into one-row strips:
    only the first and last rows hold fractional pixels, the rows between none."""
    monkeypatch.setattr(engine, "_STRIP_PIXELS", 1)
    item, _, path = synthetic_item
    zone = {
        "type": "Polygon",
        "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, [(2, 3.5), (40, 3.5), (40, 30.25), (2, 30.25)])],
    }
    result = run_zonal(make_context([item]), item_id="synthetic", band=1, geometry=zone, coverage="exact")
    check_exact(result, exactextract_oracle(path, zone_geometries(zone, UTM33)))


def test_bucketed_quantiles_and_spilling_match_direct(
    synthetic_item: tuple,
    s2_items: dict,
    lulc_zones: dict,
    make_context: ContextFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bounded-memory quantile path (histogram buckets, scratch files) gives the same answers."""
    item, _, _ = synthetic_item
    zones = synthetic_zones()
    cases = [
        ([item], {"item_id": "synthetic", "band": 1, "geometry": zones}),
        (s2_items, {"item_id": "s2_20150711", "band": 3, "geometry": lulc_zones}),
        (s2_items, {"item_id": "s2_20150711", "index_name": "NDVI", "geometry": lulc_zones}),
    ]
    direct = {}
    for number, (items, params) in enumerate(cases):
        for coverage in ("center", "exact"):
            direct[number, coverage] = run_zonal(make_context(items), coverage=coverage, **params)
    monkeypatch.setattr(quantiles, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(quantiles, "DIRECT_PERCENTILE_LIMIT", 0)
    monkeypatch.setattr(quantiles, "GROUP_LIMIT", 500)  # many bucket groups, one pass each
    # Exact mode counts distinct values from the first part where the budget allows (1 GiB), and
    # sorts where it does not (1 byte, 64 KiB).
    monkeypatch.setattr(quantiles, "PRESENCE_MIN", 0)
    runs = [
        # A budget of 1 byte spills every value to scratch files; 64 KiB keeps the first parts in
        # memory and spills the rest; 1 GiB keeps them all in memory. Histograms are counted as
        # parts are made (eager 1) or when the quantiles need them (eager 2**30); two workers
        # select the candidates on the read pool.
        (budget, eager, workers)
        for budget, eager, workers in ((1, 1, 1), (1 << 16, 1, 2), (1 << 16, 1 << 30, 2), (1 << 30, 1, 1))
    ]
    for number, (items, params) in enumerate(cases):
        for coverage in ("center", "exact"):
            for budget, eager, workers in runs:
                monkeypatch.setattr(quantiles, "_EAGER_HISTOGRAM_MIN", eager)
                bucketed = run_zonal(
                    make_context(items, memory_budget_bytes=budget, workers=workers), coverage=coverage, **params
                )
                for a, b in zip(bucketed["zones"], direct[number, coverage]["zones"], strict=True):
                    got = [a["stats"]["median"], *(p["value"] for p in a["percentiles"])]
                    want = [b["stats"]["median"], *(p["value"] for p in b["percentiles"])]
                    assert all(close(x, y, rel=1e-12, floor=1e-12) for x, y in zip(got, want, strict=True)), (
                        number,
                        coverage,
                        budget,
                        a["index"],
                        got,
                        want,
                    )


def test_histogram_and_worker_count_do_not_change_results(synthetic_item: tuple, make_context: ContextFactory) -> None:
    item, values, _ = synthetic_item
    zone = {
        "type": "Polygon",
        "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, [(1.2, 1.2), (68.7, 1.2), (68.7, 58.7), (1.2, 58.7)])],
    }
    one = run_zonal(
        make_context([item], workers=1),
        item_id="synthetic",
        band=1,
        geometry=zone,
        histogram={"bins": 7, "range": None},
    )
    two = run_zonal(
        make_context([item], workers=2),
        item_id="synthetic",
        band=1,
        geometry=zone,
        histogram={"bins": 7, "range": None},
    )
    assert one["zones"] == two["zones"]
    inside = values[1:59, 1:69]
    valid = inside[np.isfinite(inside) & (inside != -9999.0)]
    counts, edges = np.histogram(valid, bins=7, range=(valid.min(), valid.max()))
    histogram = one["zones"][0]["histogram"]
    assert histogram["counts"] == counts.tolist()
    assert histogram["edges"] == pytest.approx(edges.tolist(), rel=1e-5)  # numpy: float32 edges


def test_scaled_band_and_missing_raster_zone(
    synthetic_item: tuple, s2_items: dict, lulc_zones: dict, make_context: ContextFactory
) -> None:
    scaled = run_zonal(make_context(s2_items), item_id="s2_20150711", band=3, geometry=lulc_zones, apply_scale=True)
    raw = run_zonal(make_context(s2_items), item_id="s2_20150711", band=3, geometry=lulc_zones)
    assert scaled["unit"] is None
    for got, stored in zip(scaled["zones"], raw["zones"], strict=True):
        assert got["stats"]["count"] == stored["stats"]["count"]
        for key in ("min", "max", "mean", "median"):
            if stored["stats"][key] is None:
                assert got["stats"][key] is None
            else:
                assert got["stats"][key] == pytest.approx(stored["stats"][key] * 1e-4, rel=1e-6), (got["index"], key)
    # A zone that misses the raster is reported, with nothing counted, among the others.
    item, _, _ = synthetic_item
    zones = synthetic_zones()
    missing = run_zonal(make_context([item]), item_id="synthetic", band=1, geometry=zones, apply_scale=True)
    assert [z["feature_id"] for z in missing["zones"]] == [f"z{i}" for i in range(6)]
    off = missing["zones"][4]
    assert off["stats"]["count"] == 0 and off["stats"]["nodata_count"] == 0 and off["pixels_read"] == 0
    assert all(off["stats"][k] is None for k in ("min", "max", "mean", "std", "sum", "median")), off
    assert all(p["value"] is None for p in off["percentiles"])
    assert all(z["stats"]["count"] > 0 for i, z in enumerate(missing["zones"]) if i not in (2, 4))
