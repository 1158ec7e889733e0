"""Client-supplied rasters are a trust boundary: every entry point of ``raster`` opens
them with an allow-list of drivers, no sibling files and size limits checked before decoding."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import box

from geopera_kernel.raster import (
    CONVERSION_DRIVERS,
    RASTER_TOO_LARGE,
    UNSUPPORTED_RASTER,
    UNSUPPORTED_RASTER_FORMAT,
    RasterError,
    RasterLimits,
    configure_limits,
    convert_to_cog,
    inspect_raster,
)
from geopera_kernel.raster.bathymetry import bathymetry_to_cog, detect_bands
from geopera_kernel.raster.clip import clip_to_cog
from tests.support.hostile_rasters import LABELS, SIDE, sparse_geotiff

AOI = box(14.0, 45.0, 15.0, 46.0)


def entry_points(dst: Path) -> dict[str, Callable[[Path], object]]:
    """Every way the server and the workers open a client-supplied raster."""
    return {
        "inspect (registration)": lambda src: inspect_raster(src),
        "inspect (before conversion)": lambda src: inspect_raster(src, drivers=CONVERSION_DRIVERS),
        "inspect (any COG or not)": lambda src: inspect_raster(src, require_cog=False, drivers=CONVERSION_DRIVERS),
        "convert_to_cog": lambda src: convert_to_cog(src, dst),
        "clip source": lambda src: clip_to_cog(src, AOI, dst),
        "bathymetry bands": lambda src: detect_bands(src),
        "bathymetry source": lambda src: bathymetry_to_cog(src, dst, m0=1.0, m1=1.0),
    }


def refusals(src: Path, dst: Path) -> dict[str, RasterError]:
    caught = {}
    for name, call in entry_points(dst).items():
        try:
            call(src)
        except RasterError as error:
            caught[name] = error
        else:
            caught[name] = RasterError("ACCEPTED", f"{name} accepted {src.name}")
    return caught


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    data = secrets.token_bytes(SIDE * SIDE)
    (tmp_path / "secret.bin").write_bytes(data)
    return data


def hostile_upload(tmp_path: Path, kind: str) -> Path:
    """A label two directories below the secret, named like an upload."""
    folder = tmp_path / "storage" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "upload.tif"
    path.write_bytes(LABELS[kind]("../../secret.bin"))
    return path


@pytest.mark.parametrize("kind", LABELS)
def test_the_hostile_labels_do_read_another_file_when_gdal_may_use_any_driver(tmp_path, secret, kind):
    # What the service did before: the attack files are real, not strawmen.
    with rasterio.open(hostile_upload(tmp_path, kind)) as dataset:
        assert dataset.crs is not None
        assert dataset.read(1).tobytes() == secret


@pytest.mark.parametrize("kind", LABELS)
def test_labels_naming_other_files_are_refused_by_every_entry_point(tmp_path, secret, kind):
    upload = hostile_upload(tmp_path, kind)
    dst = tmp_path / "out.tif"

    for name, error in refusals(upload, dst).items():
        assert error.reason == UNSUPPORTED_RASTER_FORMAT, name
        assert "GeoTIFF" in error.message and str(tmp_path) not in error.message
    assert not dst.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret.bin", "storage"]


def test_text_json_and_empty_files_are_an_unsupported_format(tmp_path):
    dst = tmp_path / "out.tif"
    for name, payload in {
        "notes.tif": b"this is not a raster at all",
        "stac.tif": b'{"type": "Feature", "assets": {"data": {"href": "/etc/passwd"}}}',
        "empty.tif": b"",
    }.items():
        src = tmp_path / name
        src.write_bytes(payload)
        for entry_point, error in refusals(src, dst).items():
            assert error.reason == UNSUPPORTED_RASTER_FORMAT, (name, entry_point)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    with pytest.raises(RasterError) as caught:
        inspect_raster(fifo)
    assert caught.value.reason == UNSUPPORTED_RASTER_FORMAT


def test_a_sparse_20000_pixel_geotiff_is_refused_before_any_pixel_is_decoded(tmp_path):
    path = sparse_geotiff(tmp_path / "bomb.tif")
    assert path.stat().st_size < 20_000  # ~13 KB that claim 400 million pixels
    # One written tile, then corrupted: decoding any pixel of it would fail with
    # UNREADABLE_RASTER (the last-block probe reads exactly this tile), so RASTER_TOO_LARGE
    # proves the size is checked first.
    with rasterio.open(path, "r+") as dataset:
        last = Window(19_968, 19_968, 32, 32)
        dataset.write(np.full((1, 32, 32), 7, dtype=np.uint8), window=last)
    with rasterio.open(path) as dataset:
        offset = int(dataset.get_tag_item("BLOCK_OFFSET_39_39", "TIFF", bidx=1))
        size = int(dataset.get_tag_item("BLOCK_SIZE_39_39", "TIFF", bidx=1))
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)
    with rasterio.open(path) as dataset, pytest.raises(rasterio.errors.RasterioIOError):
        dataset.read(1, window=last)

    dst = tmp_path / "out.tif"
    for name, error in refusals(path, dst).items():
        assert error.reason == RASTER_TOO_LARGE, name
        assert "20000 x 20000" in error.message
    assert not dst.exists()


@pytest.fixture
def limits() -> Iterator[Callable[[RasterLimits], None]]:
    previous = configure_limits(RasterLimits())
    yield configure_limits
    configure_limits(previous)


def test_the_limits_count_pixels_and_pixel_values(tmp_path, write_gtiff, limits):
    path = write_gtiff("three.tif", np.ones((3, 100, 100), dtype=np.uint16))

    limits(RasterLimits(max_pixels=100 * 100, max_samples=3 * 100 * 100))
    assert inspect_raster(path, require_cog=False).grid.width == 100

    limits(RasterLimits(max_pixels=100 * 100 - 1))
    with pytest.raises(RasterError) as caught:
        inspect_raster(path, require_cog=False)
    assert caught.value.reason == RASTER_TOO_LARGE

    limits(RasterLimits(max_samples=3 * 100 * 100 - 1))
    with pytest.raises(RasterError) as caught:
        convert_to_cog(path, tmp_path / "out.tif")
    assert caught.value.reason == RASTER_TOO_LARGE
    assert "3 bands" in caught.value.message


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_sibling_files_next_to_an_upload_are_never_read(tmp_path, write_gtiff):
    # No georeferencing inside the file; a sidecar .aux.xml next to it supplies one.
    path = write_gtiff("plain.tif", np.ones((1, 50, 50), dtype=np.uint8), crs=None, transform=None)
    path.with_name("plain.tif.aux.xml").write_text(
        "<PAMDataset><SRS>EPSG:32633</SRS><GeoTransform>465000, 10, 0, 5080000, 0, -10</GeoTransform></PAMDataset>"
    )
    with rasterio.open(path) as dataset:  # GDAL's default: the sidecar counts
        assert dataset.crs == "EPSG:32633"

    with pytest.raises(RasterError) as caught:
        inspect_raster(path, require_cog=False)
    assert caught.value.reason == UNSUPPORTED_RASTER


def test_error_messages_name_no_server_directory(tmp_path, write_gtiff):
    noise = np.random.default_rng(1).integers(0, 256, size=(1, 1024, 1024), dtype=np.uint8)
    deep = tmp_path / "srv" / "geopera" / "storage"
    deep.mkdir(parents=True)
    truncated = write_gtiff("noise.tif", noise, cog=True, blocksize=512).rename(deep / "up_truncated")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text = deep / "up_text"
    text.write_bytes(b"this is not a raster at all")
    garbage = deep / "up_garbage"
    garbage.write_bytes(b"II*\x00\xff\xff\xff\x7fgarbage")

    for src in (truncated, text, garbage, deep / "up_missing"):
        for name, error in refusals(src, tmp_path / "out.tif").items():
            assert error.reason != "ACCEPTED", (src.name, name)
            assert str(tmp_path) not in error.message and "/srv/" not in error.message, (name, error.message)
