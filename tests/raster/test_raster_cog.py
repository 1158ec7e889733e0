from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geopera_kernel.raster import (
    COG_PROFILE,
    COG_WRITE_FAILED,
    MEDIA_TYPE_COG,
    UNREADABLE_RASTER,
    UNSUPPORTED_RASTER_FORMAT,
    RasterError,
    convert_to_cog,
    inspect_raster,
    write_cog,
)

STATISTICS_TAGS = (
    "STATISTICS_MINIMUM",
    "STATISTICS_MAXIMUM",
    "STATISTICS_MEAN",
    "STATISTICS_STDDEV",
    "STATISTICS_VALID_PERCENT",
)
TRANSFORM = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)


def assert_valid_cog(path: Path) -> None:
    is_valid, errors, _warnings = cog_validate(path, quiet=True)
    assert is_valid, errors


def assert_house_layout(dataset: rasterio.io.DatasetReader) -> None:
    assert dataset.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
    assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert dataset.block_shapes[0] == (512, 512)
    for index in dataset.indexes:
        assert set(STATISTICS_TAGS) <= set(dataset.tags(index))


def test_cog_profile_is_the_house_convention() -> None:
    assert dict(COG_PROFILE) == {
        "driver": "COG",
        "COMPRESS": "ZSTD",
        "LEVEL": "3",
        "BLOCKSIZE": "512",
        "OVERVIEWS": "AUTO",
        "STATISTICS": "YES",
        "BIGTIFF": "IF_SAFER",
    }


def test_convert_to_cog_keeps_metadata(write_gtiff, tmp_path: Path) -> None:
    array = np.arange(2 * 600 * 700, dtype=np.int16).reshape(2, 600, 700) % 1000
    array[:, :50, :50] = -1
    src = write_gtiff("upload.tif", array, nodata=-1)  # striped, not a COG
    with rasterio.open(src, "r+") as dataset:
        dataset.descriptions = ("B04", "B08")
        dataset.scales = (0.0001, 0.0001)
        dataset.offsets = (-0.1, -0.1)
        dataset.update_tags(ACQUISITION_DATETIME="2020-05-01T10:20:30Z")
        dataset.update_tags(2, BAND_ID="B08")
    dst = tmp_path / "converted.tif"

    convert_to_cog(src, dst)

    assert_valid_cog(dst)
    with rasterio.open(dst) as dataset:
        assert_house_layout(dataset)
        assert dataset.nodatavals == (-1.0, -1.0)
        assert dataset.descriptions == ("B04", "B08")
        assert dataset.scales == pytest.approx((0.0001, 0.0001))
        assert dataset.offsets == pytest.approx((-0.1, -0.1))
        assert dataset.tags()["ACQUISITION_DATETIME"] == "2020-05-01T10:20:30Z"
        assert dataset.tags(2)["BAND_ID"] == "B08"
        assert dataset.overviews(1)
        np.testing.assert_array_equal(dataset.read(), array)
    assert {path.name for path in tmp_path.iterdir()} == {"upload.tif", "converted.tif"}

    info = inspect_raster(dst)
    assert info.media_type == MEDIA_TYPE_COG
    assert info.statistics_computed is False
    assert [band.common_name for band in info.bands] == ["red", "nir"]
    assert info.render_hint.rgb_bands == []


def test_convert_to_cog_rejects_unreadable_sources(tmp_path: Path, write_gtiff) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    noise = np.random.default_rng(1).integers(0, 256, size=(1, 1024, 1024), dtype=np.uint8)
    truncated = write_gtiff("noise.tif", noise, cog=True, blocksize=512)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    for src, reason in ((text, UNSUPPORTED_RASTER_FORMAT), (truncated, UNREADABLE_RASTER)):
        dst = tmp_path / f"{src.stem}.cog.tif"
        with pytest.raises(RasterError) as caught:
            convert_to_cog(src, dst)
        assert caught.value.reason == reason
        assert not dst.exists()
    assert not [path for path in tmp_path.iterdir() if "partial" in path.name]


def test_write_cog_embeds_statistics_and_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    array = rng.normal(0.5, 0.1, size=(2, 600, 550)).astype(np.float32)
    array[0, :20] = np.nan
    dst = tmp_path / "ndvi.tif"

    write_cog(
        dst,
        array,
        crs="EPSG:32633",
        transform=TRANSFORM,
        nodata=float("nan"),
        descriptions=["ndvi", "ndwi"],
        scales=[1.0, 2.0],
        offsets=[0.0, 0.5],
        band_tags=[{"ACQUISITION_DATETIME": "2015-07-11T10:00:08Z"}, {}],
        dataset_tags={"PRODUCT": "test"},
    )

    assert_valid_cog(dst)
    with rasterio.open(dst) as dataset:
        assert_house_layout(dataset)
        assert dataset.crs.to_epsg() == 32633
        assert dataset.transform == TRANSFORM
        assert np.isnan(dataset.nodata)
        assert dataset.descriptions == ("ndvi", "ndwi")
        assert dataset.scales == (1.0, 2.0)
        assert dataset.offsets == (0.0, 0.5)
        assert dataset.tags()["PRODUCT"] == "test"
        assert dataset.tags(1)["ACQUISITION_DATETIME"] == "2015-07-11T10:00:08Z"
        np.testing.assert_array_equal(dataset.read(), array)
        valid = array[0][~np.isnan(array[0])].astype(np.float64)
        assert float(dataset.tags(1)["STATISTICS_MEAN"]) == pytest.approx(valid.mean(), rel=1e-12)
        assert float(dataset.tags(1)["STATISTICS_STDDEV"]) == pytest.approx(valid.std(), rel=1e-12)
    assert {path.name for path in tmp_path.iterdir()} == {"ndvi.tif"}  # staging cleaned up

    info = inspect_raster(dst)
    assert info.statistics_computed is False
    assert [band.name for band in info.bands] == ["ndvi", "ndwi"]


def test_write_cog_accepts_a_single_band_and_gdal_transform_tuple(tmp_path: Path) -> None:
    dst = tmp_path / "mask.tif"

    write_cog(
        dst,
        np.ones((40, 30), dtype=np.uint8),
        crs="EPSG:32633",
        transform=tuple(TRANSFORM)[:6],
        nodata=255,
        descriptions=["clear"],
    )

    assert_valid_cog(dst)
    with rasterio.open(dst) as dataset:
        assert (dataset.count, dataset.height, dataset.width) == (1, 40, 30)
        assert dataset.transform == TRANSFORM
        assert float(dataset.tags(1)["STATISTICS_MEAN"]) == 1.0


def test_write_cog_rejects_mismatched_band_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="descriptions"):
        write_cog(
            tmp_path / "x.tif",
            np.zeros((2, 8, 8), dtype=np.uint8),
            crs="EPSG:32633",
            transform=TRANSFORM,
            nodata=None,
            descriptions=["only one"],
        )


def test_write_cog_into_missing_directory_is_a_raster_error(tmp_path: Path) -> None:
    with pytest.raises(RasterError) as caught:
        write_cog(
            tmp_path / "missing" / "x.tif",
            np.zeros((1, 8, 8), dtype=np.uint8),
            crs="EPSG:32633",
            transform=TRANSFORM,
            nodata=None,
            descriptions=["x"],
        )
    assert caught.value.reason == COG_WRITE_FAILED


def corrupt_first_block(path: Path) -> None:
    """Overwrite the middle of the first full-resolution block of band 1 with garbage."""
    with rasterio.open(path) as dataset:
        offset = int(dataset.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(dataset.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    with path.open("r+b") as file:
        file.seek(offset + size // 4)
        file.write(b"\xff" * (size // 2))


def test_corruption_in_the_middle_is_found_when_every_block_is_read(write_gtiff, tmp_path: Path) -> None:
    noise = np.random.default_rng(5).integers(0, 1000, size=(1, 1024, 1024), dtype=np.uint16)
    src = write_gtiff("corrupt.tif", noise, tiled=True, blockxsize=512, blockysize=512, compress="zstd")
    corrupt_first_block(src)

    # No embedded statistics, so inspection decodes every block.
    with pytest.raises(RasterError) as caught:
        inspect_raster(src, require_cog=False)
    assert caught.value.reason == UNREADABLE_RASTER

    # The last-block probe passes; the failed copy is blamed on the source, not the output.
    dst = tmp_path / "out.tif"
    with pytest.raises(RasterError) as caught:
        convert_to_cog(src, dst)
    assert caught.value.reason == UNREADABLE_RASTER
    assert not dst.exists()


def test_convert_to_cog_from_another_format(tmp_path: Path) -> None:
    src = tmp_path / "scene.jp2"
    array = np.arange(3 * 80 * 90, dtype=np.uint16).reshape(3, 80, 90)
    with rasterio.open(
        src,
        "w",
        driver="JP2OpenJPEG",
        width=90,
        height=80,
        count=3,
        dtype="uint16",
        crs="EPSG:32633",
        transform=TRANSFORM,
        QUALITY=100,
        REVERSIBLE=True,
    ) as dataset:
        dataset.write(array)
    dst = tmp_path / "scene.tif"

    convert_to_cog(src, dst)

    assert_valid_cog(dst)
    info = inspect_raster(dst)
    assert info.grid.crs == "EPSG:32633"
    assert info.statistics_computed is False
    with rasterio.open(dst) as dataset:
        np.testing.assert_array_equal(dataset.read(), array)
