"""`geopera_kernel.raster.clip.clip_to_cog` on a Sentinel-2-sized tile against two peers doing the
same or less: `rasterio.mask.mask(crop=True)` + the house COG write, and rio-cogeo's
`cog_translate` of the same window (no polygon mask, no statistics).

Each measurement runs in its own child process (`python -m bench.clip child ...`), so wall
time includes no import cost and peak RSS is the child's alone: the child resets its RSS
high-water mark after imports (/proc/self/clear_refs) and reports VmHWM minus its resting RSS.
Not ru_maxrss (getrusage or os.wait4): Linux folds the parent's RSS at fork/exec time into the
child's ru_maxrss, so a large bench driver would inflate every child's number. Two AOI sizes (100 and
1000 km²); per size and method `runs` cold children and `runs` warm ones (interleaved, see
`bench.harness.interleave`), the warm ones first clipping the warm-up AOI (1 km² elsewhere on the
tile) with the same method, as a worker that already ran a job would have. Every method, the job
path included, warms up on that same AOI: a warm-up on the measured AOI (or one as large) leaves
its freed heap in the process, which the measured clip then reuses without raising the peak.

Every answer is checked in the run that times it: the pixels and transform of clip_to_cog's
output and of the job path's output must equal `rasterio.mask.mask(crop=True)`'s on the same AOI,
reprojected by the bench itself (pyproj, edges densified as clip_to_cog documents), or the bench
fails.

Every child, whatever its method, first fixes malloc's mmap threshold as a worker does at startup
(`geopera_kernel.worker.memory.return_large_buffers`), so all methods run under the same process setting.

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
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from bench.harness import REPO, Options, Outcome, Spread, interleave
from bench.results import Results, machine_line, markdown_table, utc_now
from geopera_kernel.worker.memory import MMAP_THRESHOLD_BYTES

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
AOI_CENTRE = (0.58, 0.41)  # of the measured AOIs, as fractions of the tile's width and height
# Every warm run first clips this: small, so it leaves no heap the size of the measured clip behind,
# and elsewhere on the tile (no nodata wedge there), so no decoded block or page is the measured one's.
WARMUP_KM2, WARMUP_CENTRE = 1.0, (0.25, 0.75)
# The densification clip_to_cog documents for lon/lat edges (geopera_kernel.raster.geo.DENSIFY_DEGREES),
# restated here: the reference geometry is reprojected by the bench, not by the code under test.
DENSIFY_DEGREES = 0.01
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

    from geopera_kernel.raster.cog import BandMetadata, staged_cog

    rng = np.random.default_rng(20150711)
    # Octaves of coarse random grids, bilinearly upsampled: fields vary smoothly over
    # kilometres like land cover, with fine per-pixel noise on top like sensor noise.
    steps, amplitudes = (2048, 512, 128, 32), (1.0, 0.5, 0.25, 0.12)
    grids = [
        [
            rng.standard_normal((SIZE // step + 2, SIZE // step + 2)) * amplitude
            for step, amplitude in zip(steps, amplitudes, strict=True)
        ]
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
    with staged_cog(
        partial,
        width=SIZE,
        height=SIZE,
        count=4,
        dtype="uint16",
        crs=CRS,  # type: ignore[arg-type]
        transform=TRANSFORM,
        nodata=0,
        metadata=metadata,
    ) as staging:
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
    print(f"[{NAME}] generated {TILE.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s", flush=True)
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


def aoi_lonlat(km2: float = AOI_KM2, centre: tuple[float, float] = AOI_CENTRE) -> Any:
    """An irregular 24-gon of ``km2`` km² well inside the tile (off the block grid), in lon/lat,
    centred at ``centre`` (fractions of the tile's width and height)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import Polygon

    angles = np.linspace(0.0, 2 * math.pi, 25)[:-1]
    radii = 1.0 + 0.15 * np.sin(3 * angles) + 0.08 * np.cos(7 * angles)
    shape_ = Polygon(np.column_stack([np.cos(angles) * radii, np.sin(angles) * radii]))
    scale = math.sqrt(km2 * 1e6 / shape_.area)
    cx = TRANSFORM.c + TRANSFORM.a * (SIZE * centre[0] + 0.3)
    cy = TRANSFORM.f + TRANSFORM.e * (SIZE * centre[1] + 0.7)
    utm = shapely.affinity.affine_transform(shape_, [scale, 0, 0, scale, cx, cy])
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    return shapely.transform(utm, lambda x, y: to_lonlat.transform(x, y), interleaved=False)


def warmup_aoi() -> Any:
    return aoi_lonlat(WARMUP_KM2, WARMUP_CENTRE)


def aoi_in_tile_crs(aoi: Any) -> Any:
    """The lon/lat AOI in the tile's CRS, for the peers and the pixel check: straight lon/lat
    edges densified, then projected with pyproj (the AOIs lie inside the tile, so no clipping
    to its footprint is needed)."""
    import shapely
    from pyproj import Transformer

    to_tile = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    dense = shapely.segmentize(aoi, DENSIFY_DEGREES)
    return shapely.transform(dense, lambda x, y: to_tile.transform(x, y), interleaved=False)


# --- one measurement, in a child process -----------------------------------------------------------


def _clip_to_cog(src: Path, aoi: Any, dst: Path) -> None:
    from geopera_kernel.raster.clip import clip_to_cog

    clip_to_cog(src, aoi, dst)


def _rasterio_mask(src: Path, aoi: Any, dst: Path) -> None:
    import rasterio
    import rasterio.mask

    from geopera_kernel.raster import write_cog

    with rasterio.open(src) as dataset:
        geometry = aoi_in_tile_crs(aoi)
        array, transform = rasterio.mask.mask(dataset, [geometry], crop=True)
        write_cog(
            dst,
            array,
            crs=dataset.crs,
            transform=transform,
            nodata=dataset.nodata,
            descriptions=[d or "" for d in dataset.descriptions],
            scales=dataset.scales,
            offsets=dataset.offsets,
        )


def _rio_cogeo(src: Path, aoi: Any, dst: Path) -> None:
    import rasterio
    from rasterio.features import geometry_window
    from rasterio.vrt import WarpedVRT
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    with rasterio.open(src) as dataset, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Non-standard compression schema: zstd"
        window = geometry_window(dataset, [aoi_in_tile_crs(aoi)])
        profile = {**cog_profiles.get("zstd"), "blockxsize": 512, "blockysize": 512}
        # Same CRS and an integer-offset grid: the warp is a pure nearest-neighbour copy.
        with WarpedVRT(
            dataset,
            crs=dataset.crs,
            transform=dataset.window_transform(window),
            width=int(window.width),
            height=int(window.height),
            nodata=dataset.nodata,
        ) as vrt:
            cog_translate(vrt, str(dst), profile, quiet=True)


def _cog_write_only(clipped: Path) -> Callable[[Path, Any, Path], None]:
    """The house COG write alone, of a clip already in memory: what any clip pays at least."""
    import rasterio

    from geopera_kernel.raster import write_cog

    with rasterio.open(clipped) as dataset:
        array, profile = dataset.read(), dataset.profile

    def write(src: Path, aoi: Any, dst: Path) -> None:
        # The warm-up call writes a small corner, the measured one the whole clip.
        part = array if aoi.area > warmup_aoi().area * 2 else array[:, :100, :100]
        write_cog(
            dst,
            part,
            crs=profile["crs"],
            transform=profile["transform"],
            nodata=profile["nodata"],
            descriptions=["blue", "green", "red", "nir"],
        )

    return write


_CHILD_METHODS: dict[str, Callable[[Path, Any, Path], None]] = {
    "clip_to_cog": _clip_to_cog,
    "rasterio.mask+write_cog": _rasterio_mask,
    "rio_cogeo.cog_translate": _rio_cogeo,
}


def child(method: str, src: str, dst: str, km2: float, warm: bool) -> None:
    """Import everything, reset the RSS high-water mark, run once, print the timing.

    ``warm`` first runs the same method on the warm-up AOI, as a long-running worker would
    have: GDAL's one-off allocations (driver state, PROJ context, codec contexts) are then not
    counted against this clip.
    """
    from geopera_kernel.worker.memory import return_large_buffers

    # The worker's process setting (geopera_kernel.worker.main), for every method alike, peers included.
    return_large_buffers()
    import rasterio.mask  # noqa: F401
    import rio_cogeo.cogeo  # noqa: F401

    import geopera_kernel.raster.clip  # noqa: F401

    aoi = aoi_lonlat(km2)
    if method == FLOOR:
        run_method = _cog_write_only(Path(src))
    else:
        run_method = _CHILD_METHODS[method]
    if warm:
        run_method(Path(src), warmup_aoi(), Path(dst))
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
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = process.communicate()
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{method} child exited with {process.returncode}: {output[-2000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["above_rest_kb"] = max(0, result["peak_kb"] - result["rest_kb"])
    return result


# --- the bench -------------------------------------------------------------------------------------


def reference_clip(src: Path, aoi: Any) -> tuple[np.ndarray, Any]:
    """rasterio.mask.mask(crop=True) of ``aoi`` (reprojected by the bench): the pixels to match."""
    import rasterio
    import rasterio.mask

    with rasterio.open(src) as dataset:
        return rasterio.mask.mask(dataset, [aoi_in_tile_crs(aoi)], crop=True)


def same_pixels(path: Path, reference: tuple[np.ndarray, Any]) -> bool:
    import rasterio

    array, transform = reference
    with rasterio.open(path) as output:
        return bool(output.transform == transform and np.array_equal(output.read(), array))


def check_outputs(paths: dict[str, Path], reference: tuple[np.ndarray, Any]) -> dict[str, Any]:
    """Every clip equals rasterio.mask's pixels; returns the clip's shape and uncompressed size."""
    import rasterio

    array, transform = reference
    identical = {method: same_pixels(paths[method], reference)
                 for method in ("clip_to_cog", "rasterio.mask+write_cog")}  # fmt: skip
    with rasterio.open(paths["rio_cogeo.cog_translate"]) as cogeo:
        same_window = cogeo.transform == transform and (cogeo.height, cogeo.width) == array.shape[1:]
    return {"identical": identical, "same_window": same_window, "bytes": array.nbytes, "shape": array.shape}


def _measure_sizes(src: Path, work: Path, paths: dict[str, Path], runs: int,
                   sizes: dict[float, dict[str, Any]]) -> None:  # fmt: skip
    for km2 in AOI_SIZES_KM2:

        def one(method: str, index: int, km2: float = km2) -> dict[str, Any]:
            # Cold and warm runs of a method alternate; all methods once per round, rotated.
            warm = method.startswith("warm:")
            name = method.removeprefix("warm:").removeprefix("cold:")
            result = measure(name, src, paths[name], km2=km2, warm=warm)
            print(
                f"[{NAME}] {km2:g} km² {method}: {result['wall']:.2f} s, peak "
                f"{result['above_rest_kb'] / 1024:.0f} MiB above rest",
                flush=True,
            )
            return result

        measured = interleave([f"{mode}:{method}" for method in METHODS for mode in ("cold", "warm")], runs, one)
        cold = {method: measured[f"cold:{method}"] for method in METHODS}
        warm = {method: measured[f"warm:{method}"] for method in METHODS}
        checks = check_outputs(paths, reference_clip(src, aoi_lonlat(km2)))
        floor_src = work / f"clip_{km2:g}km2.tif"
        paths["clip_to_cog"].replace(floor_src)
        floor = [measure(FLOOR, floor_src, work / "floor.tif", km2=km2, warm=True) for _ in range(runs)]
        sizes[km2] = {"cold": cold, "warm": warm, "checks": checks, "floor": floor}


def run(results: Results, options: Options) -> Outcome:
    started, machine = utc_now(), machine_line()
    src = ensure_tile()
    work = OUT / "runs"
    work.mkdir(parents=True, exist_ok=True)
    paths = {method: work / f"{method.replace('+', '_').replace('.', '_')}.tif" for method in METHODS}
    sizes: dict[float, dict[str, Any]] = {}
    try:
        _measure_sizes(src, work, paths, options.runs, sizes)
        from bench.clip_job import measure_job_path

        job_output = work / "job_output.tif"
        job = measure_job_path(src, aoi_lonlat(AOI_KM2), warmup_aoi(), options.runs, job_output)
        job["identical"] = same_pixels(job_output, reference_clip(src, aoi_lonlat(AOI_KM2)))
        sizes[AOI_KM2]["job"] = job
    finally:
        shutil.rmtree(work, ignore_errors=True)  # only the source tile stays cached

    context = {
        "date": started,
        "machine": machine,
        "src": src,
        "runs": options.runs,
        "gdal_cachemax": os.environ.get("GDAL_CACHEMAX", "unset (GDAL default: 5% of RAM)"),
        "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", f"{MMAP_THRESHOLD_BYTES // 2**20} MiB"),
    }
    body, outcome = report(sizes, context)
    results.set_section(TITLE, body)
    print(f"\n## {TITLE}\n\n{body}\n", flush=True)
    return outcome


def _peak(runs: list[dict[str, Any]]) -> float:
    """The largest peak above rest of ``runs``, in bytes."""
    return max(r["above_rest_kb"] for r in runs) * 1024.0


def _size_report(km2: float, measured: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    warm, cold, checks = measured["warm"], measured["cold"], measured["checks"]
    wall = {method: Spread.of(r["wall"] for r in runs) for method, runs in warm.items()}
    fastest = min((m for m in METHODS if m != "clip_to_cog"), key=lambda m: wall[m].median)
    output_bytes = checks["bytes"]

    def row(label: str, warm_runs: list[dict[str, Any]], cold_runs: list[dict[str, Any]] | None,
            vs: str) -> list[str]:  # fmt: skip
        peak = _peak(warm_runs)
        cold_cells = ["-", "-", "-"]
        if cold_runs is not None:
            cold_peak = _peak(cold_runs)
            cold_cells = [
                Spread.of(r["wall"] for r in cold_runs).fmt(),
                f"{cold_peak / 2**20:.0f}",
                f"{cold_peak / output_bytes:.1f}",
            ]
        return [
            label,
            Spread.of(r["wall"] for r in warm_runs).fmt(),
            vs,
            f"{peak / 2**20:.0f}",
            f"{peak / output_bytes:.1f}",
            *cold_cells,
        ]

    rows = [row(method, warm[method], cold[method], f"{wall[method].median / wall[fastest].median:.2f}")
            for method in METHODS]  # fmt: skip
    rows.append(row(FLOOR, measured["floor"], None, "-"))
    figures: dict[str, Any] = {
        "ratio": wall["clip_to_cog"].median / wall[fastest].median,
        "rss": {"clip_to_cog": (_peak(warm["clip_to_cog"]) / output_bytes, _peak(cold["clip_to_cog"]) / output_bytes)},
        "mismatches": [method for method, same in checks["identical"].items() if not same]
        + ([] if checks["same_window"] else ["rio_cogeo.cog_translate (window)"]),
    }  # fmt: skip
    job = measured.get("job")
    if job is not None:
        job_wall = Spread.of(r["wall"] for r in job["warm"])
        rows.insert(0, row("clip.create_from_item, whole job path (worker)", job["warm"], job["cold"],
                           f"{job_wall.median / wall[fastest].median:.2f}"))  # fmt: skip
        figures["ratio"] = job_wall.median / wall[fastest].median
        figures["rss"]["job path"] = (_peak(job["warm"]) / output_bytes, _peak(job["cold"]) / output_bytes)
        if not job["identical"]:
            figures["mismatches"].append("job path output")
    bands, height, width = checks["shape"]
    lines = [
        f"### {km2:g} km² AOI: {width} x {height} x {bands} bands, {output_bytes / 2**20:.1f} MiB uncompressed",
        "",
        markdown_table(
            [
                "method",
                "warm s",
                "vs faster peer",
                "warm peak above rest MiB",
                "/ output",
                "cold s",
                "cold peak above rest MiB",
                "/ output",
            ],
            rows,
        ),
        "",
        "Pixels and transform identical to rasterio.mask's: "
        + ", ".join(f"{method} {same}" for method, same in checks["identical"].items())
        + (f", job path output {job['identical']}" if job is not None else "")
        + f"; rio-cogeo window identical: {checks['same_window']}. Faster peer: {fastest}.",
    ]
    if job is not None:
        dispatch = Spread.of(r["dispatch_s"] for r in job["warm"])
        run_s = Spread.of(r["run_s"] for r in job["warm"])
        rest = Spread.of(r["rest_kb"] / 1024 for r in job["warm"])
        lines += [
            "",
            f"Whole job path (warm runs): call -> worker running {dispatch.fmt('.0f', 1000)} ms, running -> "
            f"SUCCEEDED (clip, COG write, RegisterOutputs upload, server validation and commit) {run_s.fmt()} s; "
            f"worker resting RSS {rest.fmt('.0f')} MiB.",
        ]
    return lines, figures


def report(sizes: dict[float, dict[str, Any]], context: dict[str, Any]) -> tuple[str, Outcome]:
    sections: list[str] = []
    figures: dict[float, dict[str, Any]] = {}
    for km2, measured in sizes.items():
        lines, figures[km2] = _size_report(km2, measured)
        sections += ["", *lines]
    main = figures[AOI_KM2]
    ratio = main["ratio"]
    mismatches = [f"{km2:g} km² {what}" for km2, f in figures.items() for what in f["mismatches"]]
    valid = not mismatches
    time_met = ratio <= TARGET_RATIO
    warm_rss = {path: warm for path, (warm, _) in main["rss"].items()}
    cold_rss = {path: cold for path, (_, cold) in main["rss"].items()}
    rss_met = all(value < TARGET_RSS_FACTOR for value in warm_rss.values())
    cold_met = all(value < TARGET_RSS_FACTOR for value in cold_rss.values())
    verdict = ("PASS" if time_met and rss_met else "FAIL") if valid else "FAIL: outputs differ from rasterio.mask's"

    def listing(values: dict[str, float]) -> str:
        return ", ".join(f"{path} {value:.1f}x" for path, value in values.items())

    cold_note = (
        f"Cold (a fresh process's first clip: {listing(cold_rss)}) the target is "
        + ("met as well" if cold_met else "missed")
        + f"; the difference to warm is what a process's first clip of any size pays once (GDAL drivers, "
        f"PROJ database, codec contexts): a {WARMUP_KM2:g} km² warm-up, whose output is a few hundred KiB, "
        "removes it."
    )
    lines = [
        f"Run {context['date']} on {context['machine']}; GDAL_CACHEMAX {context['gdal_cachemax']} "
        "(the job path's worker sets 64 MiB unless told otherwise); malloc's mmap threshold fixed at "
        f"{context['mmap_threshold']} in every process, as the worker does at startup (geopera_kernel.worker.memory).",
        "",
        f"Source: `{context['src'].name}` ({SIZE} x {SIZE}, 4 x uint16, ZSTD, 512 tiles, overviews, "
        f"statistics; {context['src'].stat().st_size / 1e6:.0f} MB of smooth noise). AOIs: irregular 24-gons "
        "in lon/lat, off the block grid. Peers: `rasterio.mask.mask(crop=True)` on the AOI reprojected by the "
        "bench (pyproj, edges densified to 0.01°) + `raster.write_cog` (the same house COG: ZSTD, "
        "overviews, statistics); `rio_cogeo.cog_translate` (zstd profile, 512 tiles) of a WarpedVRT of the "
        "same window, which does less (no polygon mask, no statistics).",
        "",
        f"Every method, the whole job path included, runs {context['runs']} times warm and {context['runs']} "
        "times cold, each in a fresh process (for the job path a fresh worker), the runs interleaved: times are "
        "median [min–max], peaks the maximum. Warm: the process first clipped the warm-up AOI "
        f"({WARMUP_KM2:g} km² elsewhere on the tile) with the same method, a worker's steady state without the "
        "flattery of a warm-up as large as the measured clip (its freed heap would absorb the measured clip's "
        "peak). Cold: the process's first clip. Peak above rest = VmHWM, reset after imports / before the job "
        "(/proc/<pid>/clear_refs), minus the resting RSS (ru_maxrss would include the parent's RSS at fork).",
        "",
        f"**Targets at {AOI_KM2:g} km²: whole job path wall time <= {TARGET_RATIO:g}x the faster peer "
        f"({'met' if time_met else 'missed'}: {ratio:.2f}x); warm peak RSS above rest < {TARGET_RSS_FACTOR:g}x "
        f"the uncompressed output ({'met' if rss_met else 'missed'}: {listing(warm_rss)}): {verdict}.** " + cold_note,
        *(["", f"**Outputs that differ from rasterio.mask's: {', '.join(mismatches)}.**"] if mismatches else []),
        *sections,
        "",
        "Where the memory goes: clip_to_cog holds one strip (512 source rows x the window width) and "
        "closes its source handle after each strip; while it reads a strip, and while it translates an "
        "in-memory staging into the COG, it caps GDAL's block cache at a block and a half (source block of "
        "every band, resp. output tile: 3 MiB here) instead of GDAL_CACHEMAX, since every block is used once "
        "and a larger cache only stays resident. Outputs up to 64 MiB are staged in memory, larger ones in a "
        "file flushed strip by strip (that translation keeps GDAL_CACHEMAX). The rest is the GDAL COG "
        "driver's translation (overviews, ZSTD contexts, statistics): the "
        f"floor row is `write_cog` of the finished clip, preloaded ({context['runs']} warm runs; its array is "
        "not counted), i.e. what the house COG write alone costs. Every process here, like a worker, fixes "
        "malloc's mmap threshold (geopera_kernel.worker.memory), so buffers of 2 MiB and more (the overview chunk, the "
        "staging, strips) are unmapped when freed; with glibc's default, whose threshold rises after each "
        "large free, later ones came from the brk heap and clip_to_cog's warm peak varied from 27 to 39 MiB "
        "between runs. It costs every method about 15-20% more CPU (page faults of fresh mappings).",
    ]
    summary = (
        f"{TITLE}: {verdict}, {ratio:.2f}x the faster peer, warm peak RSS above rest "
        f"{listing(warm_rss)} the output at {AOI_KM2:g} km² (cold {listing(cold_rss)})"
    )
    target_met = (time_met and rss_met) if valid else None
    return "\n".join(lines), Outcome(NAME, valid=valid, target_met=target_met, summary=summary)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1")
    else:
        # Standalone: keep bench/RESULTS.md untouched (`python -m bench.run --only clip` updates it).
        print(run(Results(path=OUT / "RESULTS.md"), Options(runs=int(os.environ.get("BENCH_RUNS", "3")))).summary)
