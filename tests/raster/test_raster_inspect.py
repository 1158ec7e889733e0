from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import shape

from geopera_kernel.raster import (
    CONVERSION_DRIVERS,
    MEDIA_TYPE_COG,
    MEDIA_TYPE_GEOTIFF,
    NOT_A_COG,
    UNREADABLE_RASTER,
    UNSUPPORTED_RASTER,
    UNSUPPORTED_RASTER_FORMAT,
    BandStatistics,
    RasterError,
    RescaleRange,
    datetime_from_name,
    inspect_raster,
)

BGRN_SAMPLE = "s2l1c_slovenia_20150711_bgrn.tif"
NDVI_SAMPLE = "s2l1c_slovenia_ndvi_68dates.tif"


def numpy_statistics(band: np.ndarray, nodata: float | None) -> BandStatistics | None:
    """Reference statistics straight from NumPy over the valid pixels of a whole band."""
    values = band.astype(np.float64)
    valid = ~np.isnan(values)
    if nodata is not None and not math.isnan(nodata):
        valid &= band != nodata
    if not valid.any():
        return None
    picked = values[valid]
    return BandStatistics(
        minimum=float(picked.min()),
        maximum=float(picked.max()),
        mean=float(picked.mean()),
        stddev=float(picked.std()),
        valid_percent=100.0 * picked.size / band.size,
    )


def assert_statistics_close(
    actual: BandStatistics | None, expected: BandStatistics | None, *, rel: float, valid_abs: float = 1e-9
) -> None:
    assert (actual is None) == (expected is None)
    if actual is None or expected is None:
        return
    assert actual.minimum == pytest.approx(expected.minimum, rel=rel)
    assert actual.maximum == pytest.approx(expected.maximum, rel=rel)
    assert actual.mean == pytest.approx(expected.mean, rel=rel)
    assert actual.stddev == pytest.approx(expected.stddev, rel=rel, abs=1e-12)
    assert actual.valid_percent == pytest.approx(expected.valid_percent, abs=valid_abs)


def test_sentinel2_sample_band_metadata(sample_dir: Path) -> None:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    expected_file = next(entry for entry in manifest["files"] if entry["file"] == BGRN_SAMPLE)

    info = inspect_raster(sample_dir / BGRN_SAMPLE)

    assert info.media_type == MEDIA_TYPE_COG
    assert info.size_bytes == expected_file["bytes"]
    assert info.sha256 == expected_file["sha256"]
    assert [band.common_name for band in info.bands] == ["blue", "green", "red", "nir"]
    assert [band.name for band in info.bands] == ["blue", "green", "red", "nir"]
    assert [band.sensor_band_id for band in info.bands] == ["B02", "B03", "B04", "B08"]
    assert info.bands[0].center_wavelength_um == pytest.approx(0.4924)
    assert all(band.data_type == "uint16" and band.nodata == 0.0 for band in info.bands)
    assert info.bands[0].scale == pytest.approx(0.0001)
    assert info.bands[0].offset == 0.0
    assert info.bands[0].unit == "reflectance*10000"
    assert not any(key.startswith("STATISTICS_") for band in info.bands for key in band.tags)
    assert info.bands[0].tags["BAND_ID"] == "B02"
    assert info.datetime == dt.datetime(2015, 7, 11, 10, 0, 8, tzinfo=dt.UTC)
    assert info.tags["PLATFORM"] == "Sentinel-2"

    grid = info.grid
    assert grid.crs == "EPSG:32633"
    assert (grid.width, grid.height) == (100, 101)
    assert grid.transform == pytest.approx(tuple(expected_file["transform"]))
    assert grid.bounds == pytest.approx(tuple(expected_file["bounds"]), abs=1e-3)
    assert grid.block_size == (64, 64)
    assert grid.overview_count >= 1
    assert grid.compression == "ZSTD"

    assert info.statistics_computed is False
    assert info.render_hint.rgb_bands == [3, 2, 1]
    blue = info.bands[0].statistics
    assert blue is not None
    assert info.render_hint.rescale[0] == RescaleRange(
        max(blue.minimum, blue.mean - 2 * blue.stddev), min(blue.maximum, blue.mean + 2 * blue.stddev)
    )


@pytest.mark.parametrize("sample", [BGRN_SAMPLE, NDVI_SAMPLE])
def test_sample_embedded_statistics_match_numpy(sample_dir: Path, sample: str) -> None:
    info = inspect_raster(sample_dir / sample)

    with rasterio.open(sample_dir / sample) as dataset:
        data = dataset.read()
        nodatavals = dataset.nodatavals
    assert len(info.bands) == data.shape[0]
    for band, band_data, nodata in zip(info.bands, data, nodatavals, strict=True):
        # GDAL prints statistics with 14 significant digits and VALID_PERCENT with 2 decimals.
        assert_statistics_close(band.statistics, numpy_statistics(band_data, nodata), rel=1e-11, valid_abs=0.01)


def test_ndvi_stack_nan_nodata_and_no_common_names(sample_dir: Path) -> None:
    info = inspect_raster(sample_dir / NDVI_SAMPLE)

    assert len(info.bands) == 68
    assert all(band.nodata is not None and math.isnan(band.nodata) for band in info.bands)
    assert all(band.common_name is None for band in info.bands)
    assert info.render_hint.rgb_bands == []
    assert info.bands[0].tags["ACQUISITION_DATETIME"] == "2015-07-11T10:00:08Z"


def test_sample_footprint_in_lon_lat(sample_dir: Path) -> None:
    info = inspect_raster(sample_dir / BGRN_SAMPLE)

    footprint = info.footprint
    assert footprint["type"] == "Polygon"
    ring = footprint["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(ring) == 4 * 20 + 1  # 21 points per edge, shared corners, closed
    polygon = shape(footprint)
    assert polygon.is_valid
    assert polygon.exterior.is_ccw  # RFC 7946 right-hand rule
    west, south, east, north = info.bbox
    assert 14.5 < west < east < 14.6
    assert 45.8 < south < north < 45.9
    assert info.bbox == pytest.approx(polygon.bounds)
    # Every pixel-grid corner, reprojected on its own, lies on the footprint.
    left, bottom, right, top = info.grid.bounds
    to_lon_lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for x, y in [(left, bottom), (left, top), (right, top), (right, bottom)]:
        lon, lat = to_lon_lat.transform(x, y)
        assert polygon.exterior.distance(shape({"type": "Point", "coordinates": [lon, lat]})) < 1e-9
    json.dumps(footprint)  # plain JSON types only


def test_footprint_across_antimeridian_is_split(write_gtiff) -> None:
    # 200 km wide in UTM 60N straddling 180°.
    path = write_gtiff(
        "antimeridian.tif",
        np.ones((1, 10, 20), dtype=np.uint8),
        crs="EPSG:32660",
        transform=Affine(10_000.0, 0.0, 700_000.0, 0.0, -10_000.0, 5_100_000.0),
    )

    info = inspect_raster(path, require_cog=False)

    assert info.footprint["type"] == "MultiPolygon"
    west, _, east, _ = info.bbox
    assert 179 < west < 180
    assert -180 < east < -177
    assert all(
        shape({"type": "Polygon", "coordinates": part}).exterior.is_ccw for part in info.footprint["coordinates"]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("s2l1c_slovenia_20150711_bgrn", dt.datetime(2015, 7, 11, tzinfo=dt.UTC)),
        ("s2l1c_slovenia_20150909_bgrn.tif", dt.datetime(2015, 9, 9, tzinfo=dt.UTC)),
        ("S2A_MSIL1C_20150711T100008_N0204_R122", dt.datetime(2015, 7, 11, 10, 0, 8, tzinfo=dt.UTC)),
        ("LC08_L2SP_190028_20200101_20200113_02_T1", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        ("scene_20151340_then_20160229", dt.datetime(2016, 2, 29, tzinfo=dt.UTC)),  # invalid first
        ("tile_2015071100", None),  # longer digit run, not a date
        ("no_date_here", None),
        ("20150229", None),  # not a leap year
    ],
)
def test_datetime_from_name(name: str, expected: dt.datetime | None) -> None:
    assert datetime_from_name(name) == expected


def test_striped_gtiff_is_not_a_cog(write_gtiff) -> None:
    # Above 512 px a COG must be tiled; small striped files written by GDAL do validate.
    path = write_gtiff("striped.tif", np.zeros((1, 600, 600), dtype=np.uint8))

    with pytest.raises(RasterError) as caught:
        inspect_raster(path)

    assert caught.value.reason == NOT_A_COG
    assert any("not tiled" in finding for finding in caught.value.findings)

    info = inspect_raster(path, require_cog=False)
    assert info.media_type == MEDIA_TYPE_GEOTIFF
    assert info.statistics_computed is True


def test_text_file_is_an_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("this is not a raster\n")

    for require_cog in (True, False):
        with pytest.raises(RasterError) as caught:
            inspect_raster(path, require_cog=require_cog)
        assert caught.value.reason == UNSUPPORTED_RASTER_FORMAT
        assert caught.value.message


def block_extent(path: Path, col: int, row: int) -> tuple[int, int]:
    """Byte offset and size of a full-resolution block of band 1, from GDAL's TIFF domain."""
    with rasterio.open(path) as dataset:
        offset = int(dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(dataset.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    return offset, size


def test_cog_truncated_to_half_is_unreadable(write_gtiff) -> None:
    # Incompressible data so the file is mostly pixel blocks: the COG layout is header,
    # overview (1 block), then the 2x2 full-resolution blocks in row-major order.
    noise = np.random.default_rng(7).integers(0, 256, size=(1, 1024, 1024), dtype=np.uint8)
    path = write_gtiff("noise.tif", noise, cog=True, blocksize=512)
    data = path.read_bytes()
    cut = len(data) // 2
    first_offset, first_size = block_extent(path, 0, 0)
    last_offset, last_size = block_extent(path, 1, 1)
    # The cut must land after the first full-resolution block and before the last one ends,
    # otherwise reading only the first block would already catch it.
    assert first_offset + first_size <= cut < last_offset + last_size
    path.write_bytes(data[:cut])

    assert cog_validate(path, quiet=True)[0]  # the layout check alone does not notice
    with rasterio.open(path) as dataset:
        dataset.read(1, window=((0, 512), (0, 512)))  # nor does opening and reading the start

    with pytest.raises(RasterError) as caught:
        inspect_raster(path)
    assert caught.value.reason == UNREADABLE_RASTER
    # The specific GDAL/libtiff message is surfaced, not rasterio's generic wrapper.
    assert "See previous exception" not in caught.value.message


def test_sample_truncated_to_half_is_unreadable(sample_dir: Path, tmp_path: Path) -> None:
    data = (sample_dir / BGRN_SAMPLE).read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(RasterError) as caught:
        inspect_raster(path)
    assert caught.value.reason == UNREADABLE_RASTER


def test_statistics_computed_exactly_without_embedded_ones(write_gtiff) -> None:
    rng = np.random.default_rng(42)
    # Several 256 px blocks, partial ones at the right and bottom edges.
    shape_ = (700, 600)
    # A large mean with a small spread: naive float32/sum-of-squares would drift.
    values = rng.normal(100_000.0, 3.0, size=shape_).astype(np.float32)
    values[rng.random(shape_) < 0.1] = np.nan
    values[rng.random(shape_) < 0.1] = -9999.0
    constant = np.full(shape_, 7.0, dtype=np.float32)
    constant[:100] = -9999.0
    empty = np.full(shape_, np.nan, dtype=np.float32)
    empty[::2] = -9999.0
    array = np.stack([values, constant, empty])
    path = write_gtiff("unstats.tif", array, nodata=-9999.0, cog=True, blocksize=256)
    with rasterio.open(path) as dataset:
        assert not any(key.startswith("STATISTICS_") for key in dataset.tags(1))

    info = inspect_raster(path)

    assert info.statistics_computed is True
    for band, band_data in zip(info.bands, array, strict=True):
        assert_statistics_close(band.statistics, numpy_statistics(band_data, -9999.0), rel=1e-12)
    values_statistics = info.bands[0].statistics
    assert values_statistics is not None
    assert values_statistics.valid_percent == pytest.approx(81.0, abs=0.5)
    assert info.bands[2].statistics is None
    assert info.render_hint.rescale[1] == RescaleRange(7.0, 8.0)  # constant band: non-empty range
    assert info.render_hint.rescale[2] == RescaleRange(0.0, 1.0)


def test_statistics_computed_for_integer_sample_data(sample_dir: Path, write_gtiff) -> None:
    with rasterio.open(sample_dir / BGRN_SAMPLE) as dataset:
        array = dataset.read()
    array[:, :10, :10] = 0  # nodata
    path = write_gtiff("bgrn_nostats.tif", array, nodata=0, cog=True, blocksize=64)

    info = inspect_raster(path)

    assert info.statistics_computed is True
    for band, band_data in zip(info.bands, array, strict=True):
        assert_statistics_close(band.statistics, numpy_statistics(band_data, 0), rel=1e-12)


def test_raster_without_crs_is_unsupported(write_gtiff) -> None:
    path = write_gtiff("no_crs.tif", np.ones((1, 32, 32), dtype=np.uint8), crs=None)

    with pytest.raises(RasterError) as caught:
        inspect_raster(path)
    assert caught.value.reason == UNSUPPORTED_RASTER
    assert "coordinate reference system" in caught.value.message


def test_raster_without_geotransform_is_unsupported(write_gtiff) -> None:
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        path = write_gtiff("no_transform.tif", np.ones((1, 32, 32), dtype=np.uint8), transform=None)

    with pytest.raises(RasterError) as caught:
        inspect_raster(path, require_cog=False)
    assert caught.value.reason == UNSUPPORTED_RASTER
    assert "geotransform" in caught.value.message


def test_embedded_statistics_are_trusted_only_when_complete_and_exact(write_gtiff) -> None:
    array = np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    path = write_gtiff("tagged.tif", array)
    fake = {
        "STATISTICS_MINIMUM": "1",
        "STATISTICS_MAXIMUM": "2",
        "STATISTICS_MEAN": "1.5",
        "STATISTICS_STDDEV": "0.5",
        "STATISTICS_VALID_PERCENT": "100",
    }
    with rasterio.open(path, "r+") as dataset:
        dataset.update_tags(1, **fake)  # complete: used as-is
        dataset.update_tags(2, **fake, STATISTICS_APPROXIMATE="YES")  # approximate: recomputed
        dataset.update_tags(3, **{k: v for k, v in fake.items() if k != "STATISTICS_STDDEV"})  # partial

    info = inspect_raster(path, require_cog=False)

    assert info.statistics_computed is True
    assert info.bands[0].statistics == BandStatistics(1.0, 2.0, 1.5, 0.5, 100.0)
    for band, band_data in zip(info.bands[1:], array[1:], strict=True):
        assert_statistics_close(band.statistics, numpy_statistics(band_data, None), rel=1e-12)


def test_vrt_descriptors_are_refused(sample_dir: Path, tmp_path: Path) -> None:
    # A VRT can make GDAL read arbitrary local files or URLs; uploads must not be able to.
    vrt = tmp_path / "pointer.tif"
    rasterio.shutil.copy(sample_dir / BGRN_SAMPLE, vrt, driver="VRT")

    for require_cog in (True, False):
        with pytest.raises(RasterError) as caught:
            inspect_raster(vrt, require_cog=require_cog, drivers=CONVERSION_DRIVERS)
        assert caught.value.reason == UNSUPPORTED_RASTER_FORMAT
        assert "not a GeoTIFF" in caught.value.message


def test_other_georeferenced_formats_are_not_cogs(tmp_path: Path) -> None:
    path = tmp_path / "scene.jp2"
    profile = {"width": 64, "height": 64, "count": 1, "dtype": "uint8", "crs": "EPSG:32633"}
    transform = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)
    with rasterio.open(path, "w", driver="JP2OpenJPEG", transform=transform, **profile) as dataset:
        dataset.write(np.full((1, 64, 64), 9, dtype=np.uint8))

    # Registration reads GeoTIFF only; conversion also reads JPEG 2000.
    with pytest.raises(RasterError) as caught:
        inspect_raster(path)
    assert caught.value.reason == UNSUPPORTED_RASTER_FORMAT
    with pytest.raises(RasterError) as caught:
        inspect_raster(path, drivers=CONVERSION_DRIVERS)
    assert caught.value.reason == NOT_A_COG
    assert caught.value.findings == ["The file is not a GeoTIFF"]

    info = inspect_raster(path, require_cog=False, drivers=CONVERSION_DRIVERS)
    assert info.media_type == "image/jp2"
    assert info.grid.crs == "EPSG:32633"
    assert info.bands[0].statistics == BandStatistics(9.0, 9.0, 9.0, 0.0, 100.0)


def test_valid_cogs_off_the_house_convention_are_refused(tmp_path):
    """rio-cogeo accepts an uncompressed COG, and a big one without overviews;
    uploads are held to the house convention, so inspection refuses both."""
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    from geopera_kernel.raster import NOT_A_COG, RasterError, inspect_raster

    staged = tmp_path / "staged.tif"
    with rasterio.open(staged, "w", driver="GTiff", width=600, height=600, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:  # fmt: skip
        dst.write(np.arange(600 * 600, dtype=np.uint32).reshape(1, 600, 600).astype("uint8"))
    cases = {
        "uncompressed": ({"COMPRESS": "NONE"}, "compression NONE"),
        "no-overviews": ({"COMPRESS": "ZSTD", "OVERVIEWS": "NONE"}, "no internal overviews"),
    }
    for name, (options, expected) in cases.items():
        target = tmp_path / f"{name}.tif"
        rasterio.shutil.copy(staged, target, driver="COG", **options)
        with pytest.raises(RasterError) as info:
            inspect_raster(target)
        assert info.value.reason == NOT_A_COG
        assert any(expected in finding for finding in info.value.findings), info.value.findings
