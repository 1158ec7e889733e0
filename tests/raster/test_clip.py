"""clip_to_cog against rasterio.mask.mask(crop=True) as the pixel oracle."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.mask
from affine import Affine
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, Polygon, box, shape

import geopera_kernel.raster.cog as cog_module
from geopera_kernel.raster import RasterError, write_cog
from geopera_kernel.raster.clip import AOI_OUTSIDE_FOOTPRINT, ClipResult, clip_to_cog
from tests.support.reference_geometry import CLIP_DENSIFY_DEGREES, reproject

UTM33 = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)


def smooth_noise(shape: tuple[int, ...], seed: int, low: int = 1, high: int = 10_000) -> np.ndarray:
    """Noise on a coarse grid, upsampled: spatially correlated like imagery, never 0."""
    rng = np.random.default_rng(seed)
    bands, rows, cols = shape
    coarse = rng.uniform(low, high, size=(bands, rows // 16 + 2, cols // 16 + 2))
    fine = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :rows, :cols]
    return (fine + rng.uniform(0, (high - low) / 20, size=shape)).clip(low, high)


def make_raster(
    path: Path,
    array: np.ndarray,
    *,
    crs: str = "EPSG:32633",
    transform: Affine = UTM33,
    nodata: float | None = 0,
    descriptions: list[str] | None = None,
    **kwargs: Any,
) -> Path:
    names = descriptions or ["blue", "green", "red", "nir"][: array.shape[0]]
    write_cog(path, array, crs=crs, transform=transform, nodata=nodata, descriptions=names, **kwargs)
    return path


def to_lonlat(geometry: Any, crs: str) -> Any:
    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    import shapely

    return shapely.transform(geometry, lambda x, y: transformer.transform(x, y), interleaved=False)


def oracle(
    path: Path, aoi: Any, *, nodata: float | None = None, indexes: list[int] | None = None
) -> tuple[np.ndarray, Affine]:
    with rasterio.open(path) as dataset:
        geometry = reproject(aoi, dataset.crs, CLIP_DENSIFY_DEGREES)
        return rasterio.mask.mask(dataset, [geometry], crop=True, nodata=nodata, indexes=indexes)


def assert_matches_oracle(
    result: ClipResult, src: Path, aoi: Any, *, nodata: float | None = None, indexes: list[int] | None = None
) -> np.ndarray:
    expected, expected_transform = oracle(src, aoi, nodata=nodata, indexes=indexes)
    is_valid, errors, _ = cog_validate(str(result.path))
    assert is_valid, errors
    with rasterio.open(src) as source, rasterio.open(result.path) as clipped:
        actual = clipped.read()
        assert clipped.crs == source.crs
        assert clipped.transform == expected_transform
        assert clipped.dtypes == tuple(source.dtypes[i - 1] for i in result.band_indexes)
        assert clipped.descriptions == tuple(source.descriptions[i - 1] for i in result.band_indexes)
        assert clipped.profile["blockxsize"] == 512 and clipped.compression.name.upper() == "ZSTD"
        out_nodata = clipped.nodata
        assert out_nodata is not None
        assert (math.isnan(out_nodata) and math.isnan(result.nodata)) or out_nodata == result.nodata
        for index in clipped.indexes:
            assert "STATISTICS_VALID_PERCENT" in clipped.tags(index)
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected, equal_nan=True)
    assert (result.height, result.width) == actual.shape[1:]
    assert result.pixel_count == result.width * result.height
    return actual


@pytest.fixture
def utm_raster(tmp_path: Path) -> Path:
    array = smooth_noise((4, 300, 400), seed=1).astype("uint16")
    array[:, 200:230, 50:120] = 0  # a nodata patch inside the raster
    return make_raster(tmp_path / "utm.tif", array)


def utm_aoi(geometry: Any) -> Any:
    return to_lonlat(geometry, "EPSG:32633")


# --- the real sample ---------------------------------------------------------------------------


def test_real_sample_with_sample_aoi(sample_dir: Path, tmp_path: Path) -> None:
    src = sample_dir / "s2l1c_slovenia_20150711_bgrn.tif"
    feature = json.loads((sample_dir / "aoi_epsg4326.geojson").read_text())["features"][0]
    aoi = shape(feature["geometry"])
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif")
    actual = assert_matches_oracle(result, src, aoi)
    assert result.nodata == 0
    assert 0 < result.valid_pixel_count <= result.aoi_pixel_count < result.pixel_count
    assert result.valid_pixel_count == int(np.count_nonzero(np.all(actual != 0, axis=0)))
    # The footprint is the AOI (which lies inside the raster), with its hole.
    footprint = shape(result.footprint)
    assert footprint.symmetric_difference(aoi).area < 1e-12
    assert len(result.footprint["coordinates"]) == 2
    assert result.area_km2 == pytest.approx(0.0295, rel=0.01)  # the feature's AREA is 29488 m²
    with rasterio.open(src) as source, rasterio.open(result.path) as clipped:
        assert clipped.scales == source.scales and clipped.offsets == source.offsets
        assert clipped.tags()["REFLECTANCE_SCALE"] == "0.0001"
        assert clipped.tags()["ACQUISITION_DATETIME"] == source.tags()["ACQUISITION_DATETIME"]
        for index in source.indexes:
            source_tags, clipped_tags = source.tags(index), clipped.tags(index)
            assert clipped_tags["BAND_ID"] == source_tags["BAND_ID"]
            assert clipped_tags["UNITS"] == source_tags["UNITS"]
            # Statistics are those of the clip, not stale copies of the source's.
            assert clipped_tags["STATISTICS_VALID_PERCENT"] != source_tags["STATISTICS_VALID_PERCENT"]
            inside = actual[index - 1][actual[index - 1] != 0]
            assert float(clipped_tags["STATISTICS_MAXIMUM"]) == inside.max()


# --- generated rasters -------------------------------------------------------------------------


def test_multipolygon_with_hole(utm_raster: Path, tmp_path: Path) -> None:
    ring = Point(466_500, 5_078_800).buffer(700, quad_segs=16)
    hole = Point(466_500, 5_078_800).buffer(250, quad_segs=8)
    second = affinity.rotate(box(468_300, 5_077_400, 468_900, 5_079_300), 20)
    aoi = utm_aoi(MultiPolygon([Polygon(ring.exterior.coords, [hole.exterior.coords]), second]))
    result = clip_to_cog(utm_raster, aoi, tmp_path / "clip.tif")
    actual = assert_matches_oracle(result, utm_raster, aoi)
    # The hole is nodata, its surroundings are not.
    with rasterio.open(result.path) as clipped:
        row, col = rasterio.transform.rowcol(clipped.transform, 466_500, 5_078_800)
        assert np.all(actual[:, row, col] == 0)
        row, col = rasterio.transform.rowcol(clipped.transform, 466_500 + 500, 5_078_800)
        assert np.all(actual[:, row, col] != 0)
    assert result.footprint["type"] == "MultiPolygon"


def test_aoi_crossing_the_raster_edge(utm_raster: Path, tmp_path: Path) -> None:
    # A diagonal band leaving the raster through its right edge and top-right corner.
    band = affinity.rotate(box(467_000, 5_078_500, 472_000, 5_079_000), 35, origin=(467_000, 5_078_500))
    aoi = utm_aoi(band)
    result = clip_to_cog(utm_raster, aoi, tmp_path / "clip.tif")
    assert_matches_oracle(result, utm_raster, aoi)
    col_off, row_off, width, _ = result.window
    assert col_off + width == 400 and row_off == 0  # cut at the raster's right and top edges
    with rasterio.open(utm_raster) as source:
        raster_box = box(*source.bounds)
    assert to_utm(shape(result.footprint)).difference(raster_box).area < 1.0  # m²


def to_utm(geometry: Any) -> Any:
    import shapely

    transformer = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    return shapely.transform(geometry, lambda x, y: transformer.transform(x, y), interleaved=False)


def test_aoi_covering_the_whole_raster(utm_raster: Path, tmp_path: Path) -> None:
    aoi = utm_aoi(box(464_000, 5_076_000, 470_000, 5_081_000))
    result = clip_to_cog(utm_raster, aoi, tmp_path / "clip.tif")
    assert result.window == (0, 0, 400, 300)
    assert result.aoi_pixel_count == 400 * 300
    assert_matches_oracle(result, utm_raster, aoi)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        ("EPSG:3857", Affine(20.0, 0.0, 1_618_000.0, 0.0, -20.0, 5_760_000.0)),
        ("EPSG:4326", Affine(0.0002, 0.0, 14.50, 0.0, -0.0002, 45.90)),
    ],
)
def test_source_in_another_crs(crs: str, transform: Affine, tmp_path: Path) -> None:
    src = make_raster(
        tmp_path / "src.tif", smooth_noise((2, 250, 300), seed=2).astype("uint16"), crs=crs, transform=transform
    )
    with rasterio.open(src) as dataset:
        west, south, east, north = rasterio.warp.transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    center = Point((west + east) / 2, (south + north) / 2)
    aoi = affinity.scale(center.buffer(1.0, quad_segs=12), (east - west) / 3, (north - south) / 3)
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif")
    assert_matches_oracle(result, src, aoi)
    assert result.crs == crs


def test_source_without_nodata_gets_dtype_max(tmp_path: Path) -> None:
    src = make_raster(tmp_path / "src.tif", smooth_noise((3, 200, 200), seed=3).astype("uint16"), nodata=None)
    aoi = utm_aoi(Point(466_000, 5_079_000).buffer(600))
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif")
    assert result.nodata == 65535
    actual = assert_matches_oracle(result, src, aoi, nodata=65535)
    assert result.valid_pixel_count == result.aoi_pixel_count == int(np.count_nonzero(actual[0] != 65535))


def test_source_without_nodata_using_the_extreme_value(tmp_path: Path) -> None:
    array = smooth_noise((1, 200, 200), seed=4, low=1, high=255).astype("uint8")
    array[0, 90:110, 90:110] = 255  # saturated pixels inside the AOI
    src = make_raster(tmp_path / "src.tif", array, nodata=None, descriptions=["gray"])
    aoi = utm_aoi(Point(466_000, 5_079_000).buffer(600))
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif")
    assert result.nodata == 0  # 255 is taken, 0 is the next candidate and free
    actual = assert_matches_oracle(result, src, aoi, nodata=0)
    assert np.count_nonzero(actual == 255) >= 400


def test_float_source_with_nan(tmp_path: Path) -> None:
    array = smooth_noise((2, 200, 240), seed=5).astype("float32") / 1000
    array[:, 80:120, 100:140] = np.nan
    src = make_raster(tmp_path / "src.tif", array, nodata=None, descriptions=["a", "b"])
    aoi = utm_aoi(Point(466_100, 5_079_000).buffer(700))
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif")
    assert math.isnan(result.nodata)
    actual = assert_matches_oracle(result, src, aoi, nodata=math.nan)
    assert result.valid_pixel_count == int(np.count_nonzero(~np.isnan(actual[0])))
    assert result.valid_pixel_count < result.aoi_pixel_count  # the NaN patch is inside the AOI


def test_band_subset_keeps_band_metadata(tmp_path: Path) -> None:
    src = make_raster(
        tmp_path / "src.tif",
        smooth_noise((4, 120, 150), seed=6).astype("int16"),
        nodata=-1,
        scales=[0.1, 0.2, 0.3, 0.4],
        offsets=[1.0, 2.0, 3.0, 4.0],
        band_tags=[{"BAND_ID": f"B0{i}", "STATISTICS_MEAN": "123"} for i in range(1, 5)],
        dataset_tags={"PLATFORM": "test"},
    )
    aoi = utm_aoi(box(465_200, 5_079_000, 466_300, 5_079_900))
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif", bands=[3, 1])
    assert result.band_indexes == (3, 1)
    assert_matches_oracle(result, src, aoi, indexes=[3, 1])
    with rasterio.open(result.path) as clipped:
        assert clipped.descriptions == ("red", "blue")
        assert clipped.scales == (0.3, 0.1) and clipped.offsets == (3.0, 1.0)
        assert [clipped.tags(i)["BAND_ID"] for i in (1, 2)] == ["B03", "B01"]
        assert clipped.tags(1)["STATISTICS_MEAN"] != "123"
        assert clipped.tags()["PLATFORM"] == "test"
    with pytest.raises(ValueError, match="bands"):
        clip_to_cog(src, aoi, tmp_path / "bad.tif", bands=[5])


@pytest.fixture(scope="module")
def big_raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    array = smooth_noise((2, 3000, 3000), seed=7).astype("uint16")
    return make_raster(tmp_path_factory.mktemp("big") / "big.tif", array, descriptions=["blue", "green"])


@pytest.mark.parametrize("staging", ["memory", "file"])
def test_large_raster_in_many_strips_is_seamless(
    big_raster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    # 3000 x 3000 in 512 blocks: strips of 512 rows, and the AOI starts mid-block so the
    # first and last strips are partial. Staged in memory, and in a file as large outputs are.
    if staging == "file":
        monkeypatch.setattr(cog_module, "MEMORY_STAGING_MAX_BYTES", 0)
    src = big_raster
    center = (465_000 + 15_000, 5_080_000 - 15_000)
    star = Polygon(
        [
            (center[0] + r * math.cos(a), center[1] + r * math.sin(a))
            for a, r in zip(np.linspace(0, 2 * math.pi, 61)[:-1], [13_000, 7_000] * 30, strict=True)
        ]
    )
    aoi = utm_aoi(star)
    fractions: list[float] = []
    result = clip_to_cog(src, aoi, tmp_path / "clip.tif", progress=fractions.append)
    assert result.window[1] % 512 != 0 and result.height > 4 * 512
    assert len([f for f in fractions if f < 1.0]) >= 5  # one report per strip
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert_matches_oracle(result, src, aoi)


# --- failures ----------------------------------------------------------------------------------


def test_aoi_outside_the_raster(utm_raster: Path, tmp_path: Path) -> None:
    for far in (box(10.0, 10.0, 10.1, 10.1), utm_aoi(box(470_000, 5_070_000, 471_000, 5_071_000))):
        with pytest.raises(RasterError) as caught:
            clip_to_cog(utm_raster, far, tmp_path / "clip.tif")
        assert caught.value.reason == AOI_OUTSIDE_FOOTPRINT
    assert not list(tmp_path.glob("clip*")) and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("staging", ["memory", "file"])
def test_cancellation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str) -> None:
    if staging == "file":
        monkeypatch.setattr(cog_module, "MEMORY_STAGING_MAX_BYTES", 0)
    src = make_raster(
        tmp_path / "src.tif", smooth_noise((1, 1100, 300), seed=8).astype("uint16"), descriptions=["gray"]
    )
    aoi = utm_aoi(box(465_100, 5_069_500, 467_900, 5_079_900))
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # anything the caller raises propagates unchanged

    with pytest.raises(KeyboardInterrupt):
        clip_to_cog(src, aoi, tmp_path / "clip.tif", check_cancelled=check)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tif"]


def test_vertices_on_pixel_centres_match_across_strips(tmp_path: Path) -> None:
    # Edges through pixel centres are ties; each strip must break them exactly as a single
    # rasterization of the whole window (rasterio.mask) does.
    import shapely

    transform = Affine(0.0001, 0.0, 14.5, 0.0, -0.0001, 46.0)
    src = make_raster(
        tmp_path / "geo.tif",
        smooth_noise((1, 1600, 1400), seed=9).astype("uint16"),
        crs="EPSG:4326",
        transform=transform,
        descriptions=["gray"],
    )
    rng = np.random.default_rng(10)
    for attempt in range(6):
        rows, cols = rng.integers(0, 3200, size=12) / 2, rng.integers(0, 2800, size=12) / 2
        centres = list(zip(*rasterio.transform.xy(transform, rows, cols, offset="ul"), strict=True))
        aoi = shapely.convex_hull(shapely.MultiPoint(centres))
        result = clip_to_cog(src, aoi, tmp_path / f"clip{attempt}.tif")
        assert_matches_oracle(result, src, aoi)
