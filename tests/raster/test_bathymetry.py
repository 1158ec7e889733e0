"""Stumpf log-ratio bathymetry on rasters with known reflectances."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geopera_kernel.raster import RasterError, write_cog
from geopera_kernel.raster.bathymetry import BANDS_NOT_FOUND, bathymetry_to_cog, detect_bands

UTM33 = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)
M0, M1, N = 10.0, 12.0, 1000.0
SCALE = 0.0001


def expected_depth(blue: np.ndarray, green: np.ndarray) -> np.ndarray:
    rb, rg = blue.astype(np.float64) * SCALE, green.astype(np.float64) * SCALE
    with np.errstate(divide="ignore", invalid="ignore"):
        return M1 * np.log(N * rb) / np.log(N * rg) - M0


def scene(rows: int = 600, cols: int = 700) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 4-band (blue, green, red, nir) uint16 scene and the masks of its known regions."""
    rng = np.random.default_rng(0)
    blue = rng.integers(700, 1300, size=(rows, cols)).astype("uint16")
    green = rng.integers(300, 900, size=(rows, cols)).astype("uint16")
    red = np.full((rows, cols), 400, dtype="uint16")
    nir = rng.integers(50, 250, size=(rows, cols)).astype("uint16")  # water: NDWI > 0
    regions = {key: np.zeros((rows, cols), dtype=bool) for key in ("land", "nodata", "ratio", "deep", "negative")}
    regions["land"][:100, :] = True
    nir[regions["land"]] = 3000  # NDWI < 0
    regions["nodata"][100:120, :] = True
    blue[regions["nodata"]] = 0
    regions["ratio"][120:140, :] = True
    green[regions["ratio"]] = 10  # n * Rw(green) = 1 -> ln = 0 -> ratio not finite
    regions["deep"][140:160, :] = True
    blue[regions["deep"]], green[regions["deep"]] = 5000, 20  # depth ~98 m, beyond 30 m
    regions["negative"][160:180, :] = True
    blue[regions["negative"]], green[regions["negative"]] = 100, 9000  # depth < 0
    nir[120:160] = 5  # keep the dark-green rows water, so they are masked for their depth
    return np.stack([blue, green, red, nir]), regions


def expected_valid(array: np.ndarray, regions: dict[str, np.ndarray]) -> np.ndarray:
    masked = np.zeros(array.shape[1:], dtype=bool)
    for region in regions.values():
        masked |= region
    expected = expected_depth(array[0], array[1])
    return ~masked & (expected >= 0) & (expected <= 30)


def write_scene(path: Path, array: np.ndarray, *, band_scales: bool = True, **kwargs: object) -> Path:
    count = array.shape[0]
    options: dict[str, object] = {
        "descriptions": kwargs.pop("descriptions", ["blue", "green", "red", "nir"][:count]),
        "dataset_tags": {"REFLECTANCE_SCALE": str(SCALE), "PLATFORM": "test"},
    }
    if band_scales:
        options["scales"] = [SCALE] * count
    options.update(kwargs)
    write_cog(path, array, crs="EPSG:32633", transform=UTM33, nodata=0, **options)  # type: ignore[arg-type]
    return path


def test_depth_follows_the_formula_and_masks(tmp_path: Path) -> None:
    array, regions = scene()
    src = write_scene(tmp_path / "scene.tif", array)
    fractions: list[float] = []
    result = bathymetry_to_cog(src, tmp_path / "depth.tif", m0=M0, m1=M1, n=N, progress=fractions.append)

    is_valid, errors, _ = cog_validate(str(result.path))
    assert is_valid, errors
    with rasterio.open(result.path) as out:
        assert out.count == 1 and out.dtypes == ("float32",)
        assert out.descriptions == ("depth",) and out.units == ("m",)
        assert math.isnan(out.nodata)
        assert out.crs.to_epsg() == 32633 and out.transform == UTM33
        assert out.tags()["PLATFORM"] == "test" and "REFLECTANCE_SCALE" not in out.tags()
        assert out.tags()["BATHYMETRY_M1"] == "12.0"
        assert "STATISTICS_MEAN" in out.tags(1)
        depth = out.read(1)

    expected = expected_depth(array[0], array[1])
    valid = expected_valid(array, regions)
    for region in regions.values():
        assert np.isnan(depth[region]).all()
    assert valid.sum() > 0.5 * depth.size
    np.testing.assert_allclose(depth[valid], expected[valid], rtol=1e-6, atol=1e-5)
    assert np.isnan(depth[~valid]).all()
    assert result.water_pixel_count == int(valid.sum())
    assert result.land_pixel_count == int(regions["land"].sum())
    assert result.band_indexes == {"blue": 1, "green": 2, "nir": 4}
    assert result.reflectance_scales["blue"] == (SCALE, 0.0)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3


def test_max_depth_and_ndwi_threshold(tmp_path: Path) -> None:
    array, _ = scene(300, 200)
    src = write_scene(tmp_path / "scene.tif", array)
    expected = expected_depth(array[0], array[1])
    result = bathymetry_to_cog(src, tmp_path / "d.tif", m0=M0, m1=M1, max_depth_m=3.0, land_ndwi_threshold=0.5)
    with rasterio.open(result.path) as out:
        depth = out.read(1)
    rg, rn = array[1] * SCALE, array[3] * SCALE
    ndwi = (rg - rn) / (rg + rn)
    keep = (expected >= 0) & (expected <= 3.0) & (ndwi >= 0.5) & (array[0] > 0)
    assert 0 < keep.sum() < depth.size
    np.testing.assert_allclose(depth[keep], expected[keep], rtol=1e-6, atol=1e-5)
    assert np.isnan(depth[~keep]).all()


def test_scale_from_the_dataset_tag_and_bands_from_band_ids(tmp_path: Path) -> None:
    # No band scales and no useful descriptions: REFLECTANCE_SCALE and BAND_ID tags are used.
    array, regions = scene(260, 160)
    src = write_scene(
        tmp_path / "scene.tif",
        array,
        band_scales=False,
        descriptions=["b1", "b2", "b3", "b4"],
        band_tags=[{"BAND_ID": band_id} for band_id in ("B02", "B03", "B04", "B08")],
    )
    assert detect_bands(src) == {"blue": 1, "green": 2, "nir": 4}
    result = bathymetry_to_cog(src, tmp_path / "d.tif", m0=M0, m1=M1)
    assert result.reflectance_scales["green"] == (SCALE, 0.0)
    with rasterio.open(result.path) as out:
        depth = out.read(1)
    expected = expected_depth(array[0], array[1])
    valid = expected_valid(array, regions)
    assert valid.sum() > 0.25 * depth.size
    assert np.array_equal(~np.isnan(depth), valid)
    np.testing.assert_allclose(depth[valid], expected[valid], rtol=1e-6, atol=1e-5)


def test_without_nir_there_is_no_land_mask(tmp_path: Path) -> None:
    array, regions = scene(260, 160)
    src = write_scene(tmp_path / "scene.tif", array[:2])
    result = bathymetry_to_cog(src, tmp_path / "d.tif", m0=M0, m1=M1)
    assert result.band_indexes == {"blue": 1, "green": 2} and result.land_pixel_count == 0
    with rasterio.open(result.path) as out:
        depth = out.read(1)
    expected = expected_depth(array[0], array[1])
    land_water = regions["land"] & (expected >= 0) & (expected <= 30)
    assert land_water.any() and not np.isnan(depth[land_water]).any()


def test_missing_green_band(tmp_path: Path) -> None:
    array, _ = scene(50, 50)
    src = write_scene(tmp_path / "scene.tif", array[[0, 2]], descriptions=["blue", "red"])
    with pytest.raises(RasterError) as caught:
        bathymetry_to_cog(src, tmp_path / "d.tif", m0=M0, m1=M1)
    assert caught.value.reason == BANDS_NOT_FOUND
    assert not (tmp_path / "d.tif").exists()
