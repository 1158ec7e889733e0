"""`server.raster.clip.clip_to_cog` on a Sentinel-2-sized tile against two peers doing the
same or less: `rasterio.mask.mask(crop=True)` + the house COG write, and rio-cogeo's
`cog_translate` of the same window (no polygon mask, no statistics).

Each measurement runs in its own child process (`python -m bench.clip child ...`), so wall
time includes no import cost and peak RSS is the child's alone: the child resets its RSS
high-water mark after imports (/proc/self/clear_refs) and reports VmHWM minus its resting RSS.
Not ru_maxrss (getrusage or os.wait4): Linux folds the parent's RSS at fork/exec time into the
child's ru_maxrss, so a large bench driver would inflate every child's number. Two AOI sizes (100 and
1000 km²); per size one cold child per method, then REPEATS children that first clip 1 km²
with the same method, as a worker that already ran a job would have.

Run alone with `python -m bench.clip` (writes bench/out/clip/RESULTS.md); `bench.run` runs it
once "clip" is listed in its BENCHES.

The tile (10980 x 10980, 4 x uint16, ZSTD, 512 tiles, overviews, statistics; smooth noise so
compression is realistic) is generated once under bench/out/ (git-ignored), in strips.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from bench.harness import REPO, Options, Outcome
from bench.results import Results, machine_line, markdown_table, utc_now

NAME = "clip"
TITLE = "clip_to_cog vs rasterio.mask + COG and rio-cogeo (raster function)"
OUT = REPO / "bench" / "out" / "clip"
SIZE = 10_980
# Bump when the generator changes so a stale cached tile is not reused.
TILE_VERSION = 1
TILE = OUT / f"s2_like_{SIZE}_4xuint16_v{TILE_VERSION}.tif"
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 399_960.0, 0.0, -10.0, 5_200_020.0)  # an MGRS tile's grid in UTM 33N
AOI_KM2 = 100.0  # the target's AOI
AOI_SIZES_KM2 = (AOI_KM2, 1000.0)  # and a larger one, to show how memory scales with the output
REPEATS = 5
TARGET_RATIO = 1.2  # clip_to_cog wall time / the faster peer's
TARGET_RSS_FACTOR = 3.0  # peak RSS above rest / uncompressed output size
METHODS = ("clip_to_cog", "rasterio.mask+write_cog", "rio_cogeo.cog_translate")
# Not a peer: write_cog of the finished clip, preloaded; the memory floor of the house COG write.
FLOOR = "floor: write_cog of the clip array"


# --- the tile ------------------------------------------------------------------------------------


def ensure_tile() -> Path:
    if TILE.exists():
        return TILE
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"[{NAME}] generating {TILE.name} (once)", flush=True)
    from rasterio.windows import Window

    from server.raster.clip import BandMetadata, staged_cog

    rng = np.random.default_rng(20150711)
    # Octaves of coarse random grids, bilinearly upsampled: fields vary smoothly over
    # kilometres like land cover, with fine per-pixel noise on top like sensor noise.
    steps, amplitudes = (2048, 512, 128, 32), (1.0, 0.5, 0.25, 0.12)
    grids = [
        [rng.standard_normal((SIZE // step + 2, SIZE // step + 2)) * amplitude
         for step, amplitude in zip(steps, amplitudes, strict=True)]
        for _ in range(2)
    ]
    metadata = BandMetadata(
        descriptions=("blue", "green", "red", "nir"),
        scales=(0.0001,) * 4,
        offsets=(0.0,) * 4,
        units=("",) * 4,
        colorinterp=None,
        band_tags=tuple({None: {"BAND_ID": band_id}} for band_id in ("B02", "B03", "B04", "B08")),
        dataset_tags={None: {"PLATFORM": "synthetic", "REFLECTANCE_SCALE": "0.0001"}},
    )
    partial = TILE.with_suffix(".partial.tif")
    with staged_cog(partial, width=SIZE, height=SIZE, count=4, dtype="uint16", crs=CRS,  # type: ignore[arg-type]
                    transform=TRANSFORM, nodata=0, metadata=metadata) as staging:
        cols = np.arange(SIZE, dtype=np.float64)
        for row0 in range(0, SIZE, 1024):
            rows = np.arange(row0, min(row0 + 1024, SIZE), dtype=np.float64)
            vegetation, brightness = (_field(g, steps, rows, cols) for g in grids)
            noise = rng.normal(0.0, 1.0, (4, rows.size, SIZE))
            ndvi = np.clip(0.45 + 0.25 * vegetation, -0.2, 0.9)
            red = np.clip(900 + 300 * brightness - 600 * (ndvi - 0.45) + 25 * noise[0], 50, 9000)
            nir = np.clip(red * (1 + ndvi) / np.maximum(1 - ndvi, 0.05) + 40 * noise[1], 50, 12000)
            green = np.clip(0.8 * red + 150 + 20 * noise[2], 50, 9000)
            blue = np.clip(0.6 * red + 250 + 20 * noise[3], 50, 9000)
            data = np.stack([blue, green, red, nir]).astype(np.uint16)
            # A nodata wedge in the west, like the edge of a Sentinel-2 swath.
            data[:, cols[None, :] + 0.35 * rows[:, None] < 0.12 * SIZE] = 0
            staging.write(data, window=Window(0, row0, SIZE, rows.size))
    partial.replace(TILE)
    print(f"[{NAME}] generated {TILE.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s",
          flush=True)
    return TILE


def _field(grids: list[np.ndarray], steps: tuple[int, ...], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.zeros((rows.size, cols.size))
    for grid, step in zip(grids, steps, strict=True):
        r, c = rows / step, cols / step
        r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
        fr, fc = (r - r0)[:, None], (c - c0)[None, :]
        top = grid[np.ix_(r0, c0)] * (1 - fc) + grid[np.ix_(r0, c0 + 1)] * fc
        bottom = grid[np.ix_(r0 + 1, c0)] * (1 - fc) + grid[np.ix_(r0 + 1, c0 + 1)] * fc
        out += top * (1 - fr) + bottom * fr
    return out


def aoi_lonlat(km2: float = AOI_KM2) -> Any:
    """An irregular 24-gon of ``km2`` km² well inside the tile (off the block grid), in lon/lat."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import Polygon

    angles = np.linspace(0.0, 2 * math.pi, 25)[:-1]
    radii = 1.0 + 0.15 * np.sin(3 * angles) + 0.08 * np.cos(7 * angles)
    shape_ = Polygon(np.column_stack([np.cos(angles) * radii, np.sin(angles) * radii]))
    scale = math.sqrt(km2 * 1e6 / shape_.area)
    cx = TRANSFORM.c + TRANSFORM.a * (SIZE * 0.58 + 0.3)
    cy = TRANSFORM.f + TRANSFORM.e * (SIZE * 0.41 + 0.7)
    utm = shapely.affinity.affine_transform(shape_, [scale, 0, 0, scale, cx, cy])
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    return shapely.transform(utm, lambda x, y: to_lonlat.transform(x, y), interleaved=False)


# --- one measurement, in a child process -----------------------------------------------------------


def _clip_to_cog(src: Path, aoi: Any, dst: Path) -> None:
    from server.raster.clip import clip_to_cog

    clip_to_cog(src, aoi, dst)


def _rasterio_mask(src: Path, aoi: Any, dst: Path) -> None:
    import rasterio
    import rasterio.mask

    from server.raster import write_cog
    from server.raster.clip import aoi_in_raster_crs

    with rasterio.open(src) as dataset:
        geometry = aoi_in_raster_crs(dataset, aoi)
        array, transform = rasterio.mask.mask(dataset, [geometry], crop=True)
        write_cog(dst, array, crs=dataset.crs, transform=transform, nodata=dataset.nodata,
                  descriptions=[d or "" for d in dataset.descriptions], scales=dataset.scales,
                  offsets=dataset.offsets)


def _rio_cogeo(src: Path, aoi: Any, dst: Path) -> None:
    import rasterio
    from rasterio.features import geometry_window
    from rasterio.vrt import WarpedVRT
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    from server.raster.clip import aoi_in_raster_crs

    with rasterio.open(src) as dataset, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Non-standard compression schema: zstd"
        window = geometry_window(dataset, [aoi_in_raster_crs(dataset, aoi)])
        profile = {**cog_profiles.get("zstd"), "blockxsize": 512, "blockysize": 512}
        # Same CRS and an integer-offset grid: the warp is a pure nearest-neighbour copy.
        with WarpedVRT(dataset, crs=dataset.crs, transform=dataset.window_transform(window),
                       width=int(window.width), height=int(window.height), nodata=dataset.nodata) as vrt:
            cog_translate(vrt, str(dst), profile, quiet=True)


def _cog_write_only(clipped: Path) -> Callable[[Path, Any, Path], None]:
    """The house COG write alone, of a clip already in memory: what any clip pays at least."""
    import rasterio

    from server.raster import write_cog

    with rasterio.open(clipped) as dataset:
        array, profile = dataset.read(), dataset.profile

    def write(src: Path, aoi: Any, dst: Path) -> None:
        # The warm-up call (1 km² AOI) writes a small corner, the measured one the whole clip.
        part = array if aoi.area > 0.001 else array[:, :100, :100]
        write_cog(dst, part, crs=profile["crs"], transform=profile["transform"], nodata=profile["nodata"],
                  descriptions=["blue", "green", "red", "nir"])

    return write


_CHILD_METHODS: dict[str, Callable[[Path, Any, Path], None]] = {
    "clip_to_cog": _clip_to_cog,
    "rasterio.mask+write_cog": _rasterio_mask,
    "rio_cogeo.cog_translate": _rio_cogeo,
}


def child(method: str, src: str, dst: str, km2: float, warm: bool) -> None:
    """Import everything, reset the RSS high-water mark, run once, print the timing.

    ``warm`` first runs the same method on a 1 km² AOI, as a long-running worker would have:
    GDAL's one-off allocations (driver state, PROJ context, codec contexts) are then not
    counted against this clip.
    """
    import rasterio.mask  # noqa: F401
    import rio_cogeo.cogeo  # noqa: F401

    import server.raster.clip  # noqa: F401

    aoi = aoi_lonlat(km2)
    if method == FLOOR:
        run_method = _cog_write_only(Path(src))
    else:
        run_method = _CHILD_METHODS[method]
    if warm:
        run_method(Path(src), aoi_lonlat(1.0), Path(dst))
        Path(dst).unlink()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    rest_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    run_method(Path(src), aoi, Path(dst))
    wall = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    print("RESULT " + json.dumps({"wall": wall, "rest_kb": rest_kb, "peak_kb": peak_kb}), flush=True)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(method: str, src: Path, dst: Path, *, km2: float = AOI_KM2, warm: bool = False) -> dict[str, Any]:
    dst.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.clip", "child", method, str(src), str(dst), repr(km2), str(int(warm))],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    output, _ = process.communicate()
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{method} child exited with {process.returncode}: {output[-2000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["above_rest_kb"] = max(0, result["peak_kb"] - result["rest_kb"])
    return result


# --- the bench -------------------------------------------------------------------------------------


def check_outputs(paths: dict[str, Path]) -> dict[str, Any]:
    """The clip equals rasterio.mask's pixels; returns the clip's shape and uncompressed size."""
    import rasterio

    with rasterio.open(paths["clip_to_cog"]) as ours, rasterio.open(paths["rasterio.mask+write_cog"]) as peer:
        same = ours.transform == peer.transform and np.array_equal(ours.read(), peer.read())
        size = ours.width * ours.height * ours.count * np.dtype(ours.dtypes[0]).itemsize
        shape = (ours.count, ours.height, ours.width)
        transform = ours.transform
    with rasterio.open(paths["rio_cogeo.cog_translate"]) as cogeo:
        same_window = cogeo.transform == transform and (cogeo.height, cogeo.width) == shape[1:]
    return {"identical": same, "same_window": same_window, "bytes": size, "shape": shape}


def _measure_sizes(src: Path, work: Path, paths: dict[str, Path], sizes: dict[float, dict[str, Any]]) -> None:
    for km2 in AOI_SIZES_KM2:
        # First round: fresh ("cold") children; also warms the page cache and leaves outputs to check.
        cold = {method: measure(method, src, paths[method], km2=km2) for method in METHODS}
        checks = check_outputs(paths)
        floor_src = work / f"clip_{km2:g}km2.tif"
        paths["clip_to_cog"].replace(floor_src)
        floor = [measure(FLOOR, floor_src, work / "floor.tif", km2=km2, warm=True) for _ in range(2)]
        warm: dict[str, list[dict[str, Any]]] = {method: [] for method in METHODS}
        for repeat in range(REPEATS):
            # Rotate the order so no method always runs right after the same other one.
            for method in METHODS[repeat % len(METHODS):] + METHODS[: repeat % len(METHODS)]:
                warm[method].append(measure(method, src, paths[method], km2=km2, warm=True))
                last = warm[method][-1]
                print(f"[{NAME}] {km2:g} km² {method}: {last['wall']:.2f} s, peak "
                      f"{last['above_rest_kb'] / 1024:.0f} MiB above rest", flush=True)
        sizes[km2] = {"cold": cold, "warm": warm, "checks": checks, "floor": floor}


def run(results: Results, options: Options) -> Outcome:
    started, machine = utc_now(), machine_line()
    src = ensure_tile()
    work = OUT / "runs"
    work.mkdir(parents=True, exist_ok=True)
    paths = {method: work / f"{method.replace('+', '_').replace('.', '_')}.tif" for method in METHODS}
    sizes: dict[float, dict[str, Any]] = {}
    try:
        _measure_sizes(src, work, paths, sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # only the source tile stays cached
    from bench.clip_job import measure_job_path

    sizes[AOI_KM2]["job"] = measure_job_path(src, aoi_lonlat(AOI_KM2))

    context = {"date": started, "machine": machine, "src": src,
               "gdal_cachemax": os.environ.get("GDAL_CACHEMAX", "unset (GDAL default: 5% of RAM)")}
    body, outcome = report(sizes, context)
    results.set_section(TITLE, body)
    print(f"\n## {TITLE}\n\n{body}\n", flush=True)
    return outcome


def _size_report(km2: float, measured: dict[str, Any]) -> tuple[list[str], float, float, bool]:
    warm, cold, checks = measured["warm"], measured["cold"], measured["checks"]
    wall = {method: statistics.median(s["wall"] for s in runs) for method, runs in warm.items()}
    above = {method: max(s["above_rest_kb"] for s in runs) * 1024 for method, runs in warm.items()}
    fastest = min((m for m in METHODS if m != "clip_to_cog"), key=lambda m: wall[m])
    output_bytes = checks["bytes"]
    rows = [
        [method, f"{wall[method]:.2f}", f"{min(s['wall'] for s in warm[method]):.2f}",
         f"{wall[method] / wall[fastest]:.2f}", f"{above[method] / 2**20:.0f}",
         f"{above[method] / output_bytes:.1f}", f"{cold[method]['above_rest_kb'] / 1024:.0f}",
         f"{cold[method]['wall']:.2f}"]
        for method in METHODS
    ]
    floor = measured["floor"]
    floor_above = max(s["above_rest_kb"] for s in floor) * 1024
    rows.append([FLOOR, f"{statistics.median(s['wall'] for s in floor):.2f}", f"{min(s['wall'] for s in floor):.2f}",
                 "-", f"{floor_above / 2**20:.0f}", f"{floor_above / output_bytes:.1f}", "-", "-"])
    job = measured.get("job")
    if job is not None:
        rows.insert(0, ["clip.create_from_item, whole job path", f"{job['wall']:.2f}", f"{job['best']:.2f}",
                        f"{job['wall'] / wall[fastest]:.2f}", f"{job['above_rest_kb'] / 1024:.0f} (worker)",
                        f"{job['above_rest_kb'] * 1024 / output_bytes:.1f}", "-", "-"])  # fmt: skip
    bands, height, width = checks["shape"]
    valid = bool(checks["identical"]) and bool(checks["same_window"])
    lines = [
        f"### {km2:g} km² AOI: {width} x {height} x {bands} bands, {output_bytes / 2**20:.1f} MiB uncompressed",
        "",
        markdown_table(
            ["method", "median s", "best s", "vs faster peer", "peak above rest MiB", "/ output",
             "cold: peak above rest MiB", "cold: s"],
            rows,
        ),
        "",
        f"clip_to_cog pixels and transform identical to rasterio.mask's: {checks['identical']}; "
        f"rio-cogeo window identical: {checks['same_window']}. Faster peer: {fastest}.",
    ]
    if job is not None:
        lines += [
            "",
            f"Whole job path: call -> worker running {job['dispatch_s'] * 1000:.0f} ms, running -> SUCCEEDED "
            f"(clip, COG write, RegisterOutputs upload, server validation and commit) {job['run_s']:.2f} s "
            f"(medians); worker resting RSS {job['rest_kb'] / 1024:.0f} MiB.",
        ]
        return lines, job["wall"] / wall[fastest], job["above_rest_kb"] * 1024 / output_bytes, valid
    return lines, wall["clip_to_cog"] / wall[fastest], above["clip_to_cog"] / output_bytes, valid


def report(sizes: dict[float, dict[str, Any]], context: dict[str, Any]) -> tuple[str, Outcome]:
    sections: list[str] = []
    verdicts: dict[float, tuple[float, float, bool]] = {}
    for km2, measured in sizes.items():
        lines, ratio, rss_factor, valid = _size_report(km2, measured)
        sections += ["", *lines]
        verdicts[km2] = (ratio, rss_factor, valid)
    ratio, rss_factor, _ = verdicts[AOI_KM2]
    valid = all(v for _, _, v in verdicts.values())
    time_met, rss_met = ratio <= TARGET_RATIO, rss_factor < TARGET_RSS_FACTOR
    verdict = ("PASS" if time_met and rss_met else "FAIL") if valid else "INVALID: outputs differ (see below)"
    lines = [
        f"Run {context['date']} on {context['machine']}; GDAL_CACHEMAX {context['gdal_cachemax']}.",
        "",
        f"Source: `{context['src'].name}` ({SIZE} x {SIZE}, 4 x uint16, ZSTD, 512 tiles, overviews, "
        f"statistics; {context['src'].stat().st_size / 1e6:.0f} MB of smooth noise). AOIs: irregular 24-gons "
        "in lon/lat, off the block grid. Peers: `rasterio.mask.mask(crop=True)` on the same reprojected AOI "
        "+ `server.raster.write_cog` (the same house COG: ZSTD, overviews, statistics); "
        "`rio_cogeo.cog_translate` (zstd profile, 512 tiles) of a WarpedVRT of the same window, which does "
        "less (no polygon mask, no statistics).",
        "",
        f"Each run is a fresh child process. Times and peaks are medians / maxima of {REPEATS} runs in "
        "children that first ran the same method on a 1 km² AOI (a worker's steady state); the cold columns "
        "are one run in a child without that warm-up. Peak above rest = the child's VmHWM, reset after imports "
        "(/proc/self/clear_refs), minus its resting RSS (ru_maxrss would include the parent's RSS at fork).",
        "",
        f"**Targets at {AOI_KM2:g} km², for the whole job path: wall time <= {TARGET_RATIO:g}x the faster peer "
        f"({'met' if time_met else 'missed'}: {ratio:.2f}x) and worker peak RSS above rest < {TARGET_RSS_FACTOR:g}x "
        f"the uncompressed output ({'met' if rss_met else 'missed'}: {rss_factor:.1f}x): {verdict}.**",
        *sections,
        "",
        "Where the memory goes: clip_to_cog holds one strip (512 source rows x the window width) and "
        "closes its source handle after each strip, so GDAL's block cache does not accumulate; outputs up to "
        "64 MiB are staged in memory, larger ones in a file flushed strip by strip. The rest is the GDAL COG "
        "driver's translation (overviews, ZSTD contexts, statistics, block cache up to GDAL_CACHEMAX): the "
        "floor row is `write_cog` of the finished clip, preloaded (2 warm runs; its array is not counted), "
        "i.e. what the house COG write alone costs.",
    ]
    summary = (f"{TITLE}: {verdict}, {ratio:.2f}x the faster peer, peak RSS above rest {rss_factor:.1f}x "
               f"the output at {AOI_KM2:g} km²")
    target_met = (time_met and rss_met) if valid else None
    return "\n".join(lines), Outcome(NAME, valid=valid, target_met=target_met, summary=summary)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1")
    else:
        # Standalone: keep bench/RESULTS.md untouched (`python -m bench.run --only clip` updates it).
        print(run(Results(path=OUT / "RESULTS.md"), Options()).summary)
