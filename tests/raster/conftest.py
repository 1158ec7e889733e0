"""Fixtures for the pure raster library tests: sample data and small raster writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "s2_slovenia"
# A 10 m grid in UTM 33N near the Slovenian samples.
UTM33_TRANSFORM = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)

WriteGTiff = Callable[..., Path]


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    assert SAMPLE_DIR.is_dir(), f"sample data missing: {SAMPLE_DIR} (committed with the repository)"
    return SAMPLE_DIR


@pytest.fixture
def write_gtiff(tmp_path: Path) -> WriteGTiff:
    """Write ``array`` (bands, rows, cols) as a plain GTiff, or as a COG with ``cog=True``.

    COGs are written with STATISTICS=NO so tests control whether statistics are embedded.
    """

    def write(
        name: str,
        array: np.ndarray,
        *,
        crs: str | None = "EPSG:32633",
        transform: Any = UTM33_TRANSFORM,
        nodata: float | None = None,
        cog: bool = False,
        **creation_options: Any,
    ) -> Path:
        path = tmp_path / name
        plain_path = path.with_suffix(".plain.tif") if cog else path
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": array.shape[2],
            "height": array.shape[1],
            "count": array.shape[0],
            "dtype": array.dtype,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
        }
        with rasterio.open(plain_path, "w", **profile, **({} if cog else creation_options)) as dataset:
            dataset.write(array)
        if cog:
            rasterio.shutil.copy(plain_path, path, driver="COG", statistics="NO", compress="ZSTD", **creation_options)
            plain_path.unlink()
        return path

    return write
