"""GDAL block cache bounds: applied in bytes, nested as the largest, restored, and used by clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.env import get_gdal_config
from shapely.geometry import box

import geopera_kernel.raster.clip as clip_module
import geopera_kernel.raster.cog as cog_module
from geopera_kernel.raster._gdal import gdal_cache_limit
from geopera_kernel.raster.clip import clip_to_cog, strip_read_cache_bytes
from geopera_kernel.raster.cog import translation_cache_bytes
from tests.raster.test_clip import make_raster, smooth_noise, utm_aoi


def cache_max() -> int:
    # rasterio answers GDAL_CACHEMAX with GDALGetCacheMax64(), in bytes.
    return int(get_gdal_config("GDAL_CACHEMAX"))


def test_limit_is_applied_in_bytes_nested_as_the_largest_and_restored() -> None:
    before = cache_max()
    with gdal_cache_limit(3 * 2**20):
        assert cache_max() == 3 * 2**20
        with gdal_cache_limit(5 * 2**20):
            assert cache_max() == 5 * 2**20
            with gdal_cache_limit(2**20):
                assert cache_max() == 5 * 2**20
        assert cache_max() == 3 * 2**20
    assert cache_max() == before


def test_limit_is_restored_when_the_block_raises() -> None:
    before = cache_max()
    with pytest.raises(RuntimeError), gdal_cache_limit(2**20):
        raise RuntimeError
    assert cache_max() == before


def test_limit_never_raises_the_cache() -> None:
    before = cache_max()
    with gdal_cache_limit(before + 2**30):
        assert cache_max() == before


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        with gdal_cache_limit(0):
            pass


def test_clip_bounds_the_cache_for_strip_reads_and_the_translation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_raster(tmp_path / "src.tif", smooth_noise((3, 1100, 900), seed=3).astype("uint16"),
                      descriptions=["a", "b", "c"])  # fmt: skip
    seen: dict[str, list[int]] = {"read": [], "copy": []}
    read_window, copy_as_cog = clip_module.read_window, cog_module.copy_as_cog

    def recording_read(*args: Any, **kwargs: Any) -> np.ndarray:
        seen["read"].append(cache_max())
        return read_window(*args, **kwargs)

    def recording_copy(*args: Any, **kwargs: Any) -> None:
        seen["copy"].append(cache_max())
        copy_as_cog(*args, **kwargs)

    monkeypatch.setattr(clip_module, "read_window", recording_read)
    monkeypatch.setattr(cog_module, "copy_as_cog", recording_copy)
    before = cache_max()
    result = clip_to_cog(src, utm_aoi(box(465_100, 5_069_500, 472_900, 5_079_900)), tmp_path / "clip.tif")
    with rasterio.open(src) as dataset:
        expected_read = strip_read_cache_bytes(dataset)
    # 512 x 512 blocks of 3 uint16 bands: 1.5 MiB each, so the bounds are 2.25 MiB.
    assert expected_read == translation_cache_bytes(3, "uint16") == 512 * 512 * 3 * 2 * 3 // 2
    assert seen["read"] and set(seen["read"]) == {expected_read}
    assert seen["copy"] == [translation_cache_bytes(3, "uint16")]
    assert cache_max() == before
    assert result.path.exists()


def test_cache_bounds_have_a_floor_for_small_blocks() -> None:
    assert translation_cache_bytes(1, "uint8") == cog_module.TRANSLATION_CACHE_MIN_BYTES
    assert translation_cache_bytes(13, "float32") == 512 * 512 * 13 * 4 * 3 // 2
