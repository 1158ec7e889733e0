"""`mosaic`: zonal statistics over a mosaic of 8 Sentinel-2-sized tiles and a time series over 8
items, in-process and on a Dask LocalCluster of 1 and 2 workers, next to the single-threaded raw
floor (windowed read of red and nir, NDVI, its sum; nothing else).

The tiles are the analytics bench's two 10980 x 10980 COGs (`bench.analytics` generates them)
copied and placed on one 10 m grid 2 rows x 4 columns (alternating a/b, georeferencing
rewritten; cached under bench/out/mosaic, 5.5 GB): a mosaic of 8 items of 120 MPix each. The
zonal AOI crosses all 8 tiles; the time series reads the same quarter tile in 8 items (the two
tiles as alternating dates). Every case runs in a fresh process (peak RSS per process: the
caller, and each Dask worker); cluster start-up and a warm-up call on a small AOI (imports, open
handles) are not timed. Answers must be equal to the last digit across the three engines
(`equal` column).

Throughput is pixels read / wall second. On this 2-core machine shared with other work the
cluster cannot beat in-process threads (the same 2 cores, plus pickling and scheduling); the
point is correctness and bounded memory, and the figures say what a cluster costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.analytics import TILE_A, TILE_B, TILE_CRS, TILE_ORIGIN, TILE_SIZE, ensure_data
from bench.harness import Options, Outcome, Spread
from bench.results import Results, markdown_table, utc_now

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "mosaic"
GRID = (2, 4)  # rows, columns of tiles
SERIES_ITEMS = 8
ENGINES = ["floor", "in-process", "dask 1 worker", "dask 2 workers"]
SECTION = "mosaic: zonal stats over 8 tiles, time series over 8 items, in-process vs Dask"


def _placed_copy(source: Path, path: Path, x0: float, y0: float) -> None:
    """A copy of a bench tile moved to (x0, y0): the pixels copied, the georeferencing rewritten
    in place (the reader opens GeoTIFFs only, so no VRT)."""
    import shutil

    import rasterio
    from affine import Affine

    if path.exists():  # written whole (a copy is renamed into place when done)
        with rasterio.open(path) as dataset:
            if dataset.transform.c == x0 and dataset.transform.f == y0:
                return
    staging = path.with_name(path.name + ".copy")
    shutil.copyfile(source, staging)
    with rasterio.open(staging, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dataset:
        dataset.transform = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
    staging.replace(path)


def tiles() -> list[Path]:
    """The mosaic's 8 tiles (row-major), then the time series' 8 co-located items (the two bench
    tiles as alternating dates)."""
    ensure_data()
    OUT.mkdir(parents=True, exist_ok=True)
    paths = []
    rows, cols = GRID
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        source = TILE_A if index % 2 == 0 else TILE_B
        if index == 0:
            paths.append(source)  # already in place
            continue
        path = OUT / f"tile_{r}_{c}.tif"
        _placed_copy(source, path, TILE_ORIGIN[0] + c * TILE_SIZE * 10, TILE_ORIGIN[1] - r * TILE_SIZE * 10)
        paths.append(path)
    paths.extend(TILE_A if index % 2 == 0 else TILE_B for index in range(SERIES_ITEMS))
    return paths


def _lonlat(points: list[tuple[float, float]]) -> dict[str, Any]:
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(TILE_CRS, "EPSG:4326", always_xy=True)
    ring = [list(to_lonlat.transform(TILE_ORIGIN[0] + c * 10, TILE_ORIGIN[1] - r * 10)) for c, r in points]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def zonal_aoi() -> dict[str, Any]:
    """A band across all 8 tiles (pixel coordinates of the whole mosaic), a quarter of its area."""
    s = TILE_SIZE
    return _lonlat([(0.2 * s, 0.75 * s), (3.8 * s, 0.72 * s), (3.8 * s, 1.25 * s), (0.2 * s, 1.28 * s)])


def series_aoi() -> dict[str, Any]:
    s = TILE_SIZE
    return _lonlat([(0.25 * s, 0.25 * s), (0.75 * s, 0.26 * s), (0.74 * s, 0.75 * s), (0.26 * s, 0.74 * s)])


def _context(paths: list[Path], scheduler: str | None) -> Any:
    import datetime as dt
    import tempfile

    from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView

    bands = [
        {"name": n, "common_name": n, "nodata": 0, "scale": 0.0001, "offset": 0.0, "data_type": "uint16"}
        for n in ("blue", "green", "red", "nir")
    ]
    items = {}
    for index, path in enumerate(paths):
        asset = AssetView("data", str(path), "image/tiff", ("data",), bands)
        when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=10 * index)
        items[f"i{index}"] = ItemView(f"i{index}", datetime=when, assets={"data": asset})
    tmp = Path(tempfile.mkdtemp(prefix="mosaic-"))
    workers = len(os.sched_getaffinity(0))
    return AnalyticsContext(items, tmp, workers=workers, scratch_dir=tmp, dask_scheduler=scheduler)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _floor(paths: list[Path], aoi: dict[str, Any]) -> tuple[int, float]:
    """Single-threaded: each tile's window under the AOI's bounds, red and nir by 512-row blocks,
    NDVI and its sum."""
    import rasterio
    from rasterio.windows import Window, from_bounds
    from shapely.geometry import shape

    from geopera_kernel.analytics.geometry import to_crs

    bounds = to_crs(shape(aoi), TILE_CRS).bounds
    pixels, total = 0, 0.0
    for path in paths:
        with rasterio.open(path) as dataset:
            window = from_bounds(*bounds, transform=dataset.transform).round_offsets().round_lengths()
            window = window.intersection(Window(0, 0, dataset.width, dataset.height))
            for row in range(int(window.row_off), int(window.row_off + window.height), 512):
                part = Window(window.col_off, row, window.width, min(512, window.row_off + window.height - row))
                red, nir = dataset.read([3, 4], window=part).astype(np.float32)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ndvi = (nir - red) / (nir + red)
                total += float(np.nansum(ndvi, dtype=np.float64))
                pixels += int(part.width * part.height)
    return pixels, total


def case(what: str, engine: str) -> dict[str, Any]:
    """One measurement in this process (started fresh by `run`)."""
    from geopera_kernel.analytics import registry

    paths = tiles()
    tile_count = GRID[0] * GRID[1]
    mosaic, dates = paths[:tile_count], paths[tile_count:]
    aoi = zonal_aoi() if what == "zonal" else series_aoi()
    if engine == "floor":
        started = time.perf_counter()
        pixels, _ = _floor(mosaic if what == "zonal" else dates, aoi)
        return {"seconds": time.perf_counter() - started, "pixels": pixels, "peak_mb": _peak_mb(), "answer": None}
    cluster = None
    scheduler = None
    if engine.startswith("dask"):
        from distributed import LocalCluster

        workers = int(engine.split()[1])
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=2 // workers, processes=True, dashboard_address=None
        )
        scheduler = cluster.scheduler_address
    try:
        ctx = _context(paths, scheduler)
        if what == "zonal":
            params = {
                "item_ids": [f"i{index}" for index in range(tile_count)],
                "index_name": "NDVI",
                "geometry": aoi,
                "stats": ["count", "nodata_count", "min", "max", "mean", "std", "median"],
                "percentiles": [10, 90],
            }
            method = "zonal_stats"
        else:
            params = {
                "item_ids": [f"i{tile_count + index}" for index in range(len(dates))],
                "index_name": "NDVI",
                "geometry": aoi,
                "reducer": "mean",
            }
            method = "time_series"
        # Warm-up on a small AOI (not timed): imports and open handles in every process.
        registry.run(method, {**params, "geometry": _lonlat([(100, 100), (600, 100), (600, 600)])}, ctx)
        started = time.perf_counter()
        answer = registry.run(method, params, ctx)
        seconds = time.perf_counter() - started
        worker_mb: list[float] = []
        if cluster is not None:
            from distributed import Client

            with Client(scheduler, set_as_default=False) as client:
                worker_mb = sorted(client.run(_peak_mb).values())
        return {
            "seconds": seconds,
            "pixels": answer["pixels_read"],
            "peak_mb": _peak_mb(),
            "worker_peak_mb": worker_mb,
            "answer": json.dumps(answer, sort_keys=True),
        }
    finally:
        if cluster is not None:
            cluster.close()


def _measure(what: str, engine: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.mosaic", "--case", what, engine],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def run(results: Results, options: Options) -> Outcome:
    tiles()
    load = os.getloadavg()
    runs = max(1, min(options.runs, 3))
    measured: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(runs):  # interleaved: every engine once per round
        for what in ("zonal", "series"):
            for engine in ENGINES:
                measured.setdefault((what, engine), []).append(_measure(what, engine))
                print(f"  {what} {engine}: {measured[what, engine][-1]['seconds']:.2f} s", flush=True)
    rows = []
    equal = True
    for what in ("zonal", "series"):
        answers = {m["answer"] for engine in ENGINES[1:] for m in measured[what, engine]}
        equal = equal and len(answers) == 1
        for engine in ENGINES:
            runs_ = measured[what, engine]
            rate = Spread.of(m["pixels"] / m["seconds"] / 1e6 for m in runs_)
            workers = runs_[-1].get("worker_peak_mb") or []
            rows.append(
                [
                    "zonal mosaic (8 tiles)" if what == "zonal" else "time series (8 items)",
                    engine,
                    f"{runs_[-1]['pixels'] / 1e6:.0f}",
                    str(Spread.of(m["seconds"] for m in runs_)),
                    rate.fmt(".1f"),
                    f"{max(m['peak_mb'] for m in runs_):.0f}",
                    " / ".join(f"{mb:.0f}" for mb in workers) or "-",
                    "-" if engine == "floor" else ("yes" if len(answers) == 1 else "NO"),
                ]
            )
    table = markdown_table(
        ["work", "engine", "MPix", "seconds", "MPix/s", "caller peak MiB", "worker peak MiB", "equal"], rows
    )
    body = (
        f"{utc_now()}; {runs} interleaved runs, median [min-max]; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {len(os.sched_getaffinity(0))} cores shared with other work. "
        "`python -m bench.run --only mosaic`.\n\n"
        f"{table}\n\n"
        "floor: single-threaded read of red+nir, NDVI, sum (no mask, no statistics). in-process: the "
        "engine's threads (2). dask N workers: a LocalCluster of N processes with 2/N threads each; the "
        "caller merges the chunk results in order, so the answers equal in-process to the last digit "
        "(`equal`). On 2 cores the cluster only adds pickling and scheduling; it pays off when its workers "
        "are other machines."
    )
    results.set_section(SECTION, body)
    return Outcome("mosaic", valid=equal, target_met=equal, summary=f"mosaic: answers equal across engines: {equal}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mosaic", description=__doc__)
    parser.add_argument("--case", nargs=2, metavar=("WHAT", "ENGINE"), help="one measurement (zonal|series, engine)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*args.case)))
        return
    results = Results()
    print(run(results, Options()).summary)


if __name__ == "__main__":
    main()
