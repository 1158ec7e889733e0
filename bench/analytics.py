"""placeholder: replaced below"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

OUT = Path(__file__).resolve().parent / "out"
TILE_SIZE = 10_980
# A Sentinel-2 MGRS tile in UTM 33N (33TVM-like), 10 m pixels.
TILE_TRANSFORM = Affine(10.0, 0.0, 399_960.0, 0.0, -10.0, 5_200_020.0)
TILE_CRS = "EPSG:32633"


def _smooth_field(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, grids: list[np.ndarray],
                  steps: list[int]) -> np.ndarray:
    """Sum of bilinearly interpolated coarse random grids (octaves) at the given pixel rows/cols."""
    out = np.zeros((rows.size, cols.size), dtype=np.float32)
    for grid, step in zip(grids, steps, strict=True):
        r = rows / step
        c = cols / step
        r0 = np.floor(r).astype(np.int64)
        c0 = np.floor(c).astype(np.int64)
        fr = (r - r0).astype(np.float32)[:, None]
        fc = (c - c0).astype(np.float32)[None, :]
        g00 = grid[np.ix_(r0, c0)]
        g01 = grid[np.ix_(r0, c0 + 1)]
        g10 = grid[np.ix_(r0 + 1, c0)]
        g11 = grid[np.ix_(r0 + 1, c0 + 1)]
        out += (g00 * (1 - fc) + g01 * fc) * (1 - fr) + (g10 * (1 - fc) + g11 * fc) * fr
    return out


def write_tile(path: Path, *, seed: int, size: int = TILE_SIZE) -> Path:
    """A 4-band (blue, green, red, nir) uint16 reflectance x 10000 COG with smooth-noise content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = [2048, 512, 128, 32]
    amplitudes = [1.0, 0.5, 0.25, 0.12]
    grids = {
        name: [rng.standard_normal((size // s + 2, size // s + 2)).astype(np.float32) * a
               for s, a in zip(steps, amplitudes, strict=True)]
        for name in ("veg", "bright", "water")
    }
    staging = path.with_suffix(".staging.tif")
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16",
        "crs": TILE_CRS, "transform": TILE_TRANSFORM, "nodata": 0, "tiled": True,
        "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(staging, "w", **profile) as dst:
        for row0 in range(0, size, 1024):
            rows = np.arange(row0, min(row0 + 1024, size), dtype=np.float64)
            cols = np.arange(size, dtype=np.float64)
            veg = _smooth_field(rng, rows, cols, grids["veg"], steps)
            bright = _smooth_field(rng, rows, cols, grids["bright"], steps)
            water = _smooth_field(rng, rows, cols, grids["water"], steps)
            shape = veg.shape
            noise = lambda: rng.normal(0.0, 1.0, shape).astype(np.float32)  # noqa: E731
            ndvi = np.clip(0.45 + 0.25 * veg, -0.2, 0.9)
            ndvi = np.where(water > 1.1, -0.3 + 0.05 * noise(), ndvi)
            red = np.clip(900 + 300 * bright - 600 * (ndvi - 0.45) + 25 * noise(), 50, 9000)
            nir = np.clip(red * (1 + ndvi) / np.maximum(1 - ndvi, 0.05) + 40 * noise(), 50, 12000)
            green = np.clip(0.8 * red + 150 + 20 * noise(), 50, 9000)
            blue = np.clip(0.6 * red + 250 + 20 * noise(), 50, 9000)
            data = np.stack([blue, green, red, nir]).astype(np.uint16)
            # A nodata wedge in one corner, like the edge of a Sentinel-2 orbit swath.
            rr = rows[:, None]
            cc = cols[None, :]
            data[:, (cc + rr * 0.35) < size * 0.12] = 0
            dst.write(data, window=Window(0, row0, size, shape[0]))
        dst.descriptions = ("blue", "green", "red", "nir")
        dst.scales = (0.0001,) * 4
        dst.offsets = (0.0,) * 4
        for index, (band_id, common) in enumerate(
            [("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir")], start=1
        ):
            dst.update_tags(index, BAND_ID=band_id, COMMON_NAME=common)
    rasterio.shutil.copy(staging, path, driver="COG", COMPRESS="ZSTD", BLOCKSIZE="512",
                         OVERVIEWS="AUTO", STATISTICS="YES", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    staging.unlink()
    return path


if __name__ == "__main__":
    import sys
    import time
    t = time.time()
    write_tile(OUT / sys.argv[1], seed=int(sys.argv[2]))
    print(time.time() - t, math.pi)
