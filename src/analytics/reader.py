"""Windowed, parallel, cancellable reading of one raster.

Work is cut into chunks aligned with the file's internal blocks, so no block is decoded
twice. Each worker thread opens its own dataset handle (GDAL handles are not thread-safe,
and GDAL releases the GIL while decoding, so threads decode in parallel) and runs the whole
read + reduce of a chunk: while one thread is in numpy the other is decoding. At most
``2 * workers`` chunks are in flight, which bounds memory whatever the area.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from affine import Affine
from rasterio.crs import CRS
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geopera_kernel.analytics.base import AssetView, ItemView
from geopera_kernel.raster import open_stored, without_directories
from geopera_kernel.raster.domain_errors import failed_precondition, invalid_argument

T = TypeVar("T")
W = TypeVar("W")

# Every chunk is decoded exactly once, so GDAL's block cache (5% of RAM by default) only
# costs memory: a whole-tile read would leave ~1 GB of decoded blocks behind. A small cache
# still serves the other bands of a pixel-interleaved tile within one chunk read.
_GDAL_CACHE_MB: Final = 64
# Target chunk edge in pixels (a multiple of the block size) and byte budget of one read.
_CHUNK_EDGE: Final = 512
_CHUNK_READ_BYTES: Final = 24 * 1024 * 1024

# Cache caps requested by the analytics calls running now; GDAL's setting is process-wide, so
# it is the largest of them, and the original value comes back when the last one ends.
COG_COPY_CACHE_MB: Final = 256
_cache_lock = threading.Lock()
_cache_requests: list[int] = []
_cache_saved: Any = None


@contextmanager
def bounded_gdal_cache(megabytes: int = _GDAL_CACHE_MB) -> Iterator[None]:
    """Cap GDAL's (process-wide) block cache while at least one analytics read runs."""
    global _cache_saved
    with _cache_lock:
        if not _cache_requests:
            _cache_saved = get_gdal_config("GDAL_CACHEMAX")
        _cache_requests.append(megabytes)
        set_gdal_config("GDAL_CACHEMAX", max(_cache_requests))
    try:
        yield
    finally:
        with _cache_lock:
            _cache_requests.remove(megabytes)
            set_gdal_config("GDAL_CACHEMAX", max(_cache_requests) if _cache_requests else _cache_saved)


def _nodata_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return math.nan if value.strip().lower() == "nan" else float(value)
    return float(value)


@dataclass(frozen=True)
class RasterMeta:
    """What the engine needs to know about an asset's raster (no open handle kept)."""

    path: str
    asset_key: str
    width: int
    height: int
    count: int
    transform: Affine
    crs: CRS
    block_shape: tuple[int, int]  # rows, cols
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    units: tuple[str | None, ...]
    descriptions: tuple[str, ...]
    band_tags: tuple[Mapping[str, str], ...]
    bands: tuple[Mapping[str, Any], ...]  # server band metadata, or a stand-in built from the file

    @property
    def resolution(self) -> tuple[float, float]:
        return (math.hypot(self.transform.a, self.transform.d), math.hypot(self.transform.b, self.transform.e))

    @property
    def crs_string(self) -> str:
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg is not None else self.crs.to_wkt()

    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)


def select_asset(item: ItemView, asset_key: str | None, field: str = "params.asset_key") -> AssetView:
    """The asset named by ``asset_key``; by default the one with role "data", else the only one."""
    if asset_key is not None:
        asset = item.assets.get(asset_key)
        if asset is None:
            raise invalid_argument(
                "UNKNOWN_ASSET",
                f"item {item.id!r} has no asset {asset_key!r}; assets: " + (", ".join(sorted(item.assets)) or "none"),
                field=field,
                metadata={"assets": ",".join(sorted(item.assets))},
            )
        return asset
    data_assets = [asset for asset in item.assets.values() if "data" in asset.roles]
    if len(data_assets) == 1:
        return data_assets[0]
    if len(item.assets) == 1:
        return next(iter(item.assets.values()))
    reason = "has no assets" if not item.assets else "has several candidate assets"
    raise invalid_argument(
        "ASSET_REQUIRED",
        f"item {item.id!r} {reason}; set {field} (assets: " + (", ".join(sorted(item.assets)) or "none") + ")",
        field=field,
        metadata={"assets": ",".join(sorted(item.assets))},
    )


def _file_band(dataset: DatasetReader, index: int) -> dict[str, Any]:
    tags = dict(dataset.tags(index))
    nodata = dataset.nodatavals[index - 1]
    return {
        "name": dataset.descriptions[index - 1] or "",
        "common_name": tags.get("COMMON_NAME"),
        "description": tags.get("DESCRIPTION", ""),
        "data_type": dataset.dtypes[index - 1],
        "nodata": None if nodata is None else ("NaN" if math.isnan(nodata) else nodata),
        "scale": dataset.scales[index - 1],
        "offset": dataset.offsets[index - 1],
        "unit": dataset.units[index - 1] or tags.get("UNITS"),
        "sensor_band_id": tags.get("BAND_ID"),
        "tags": tags,
    }


# What open_meta reads from a file, keyed by path, size and mtime (a rewritten file is read
# again): opening a COG costs a millisecond or two, a noticeable share of a small AOI's call.
_FileHeader = tuple[list[dict[str, Any]], tuple[Any, ...], tuple[str, ...], tuple[dict[str, str], ...]]
_HEADERS_KEPT: Final = 256
_headers: OrderedDict[tuple[str, int, int], _FileHeader] = OrderedDict()
_headers_lock = threading.Lock()


def _file_header(asset: AssetView) -> _FileHeader:
    try:
        stat = os.stat(asset.path)
        key: tuple[str, int, int] | None = (asset.path, stat.st_size, stat.st_mtime_ns)
    except OSError:  # not a local file (e.g. a /vsi path): read it every time
        key = None
    if key is not None:
        with _headers_lock:
            header = _headers.get(key)
            if header is not None:
                _headers.move_to_end(key)
                return header
    try:
        with open_stored(asset.path) as dataset:
            file_bands = [_file_band(dataset, i) for i in dataset.indexes]
            if dataset.crs is None or dataset.transform == Affine.identity():
                raise failed_precondition(
                    "UNSUPPORTED_RASTER", f"asset {asset.key!r} is not georeferenced", asset_key=asset.key
                )
            grid = (
                dataset.width,
                dataset.height,
                dataset.count,
                dataset.transform,
                dataset.crs,
                tuple(dataset.block_shapes[0]),
                tuple(dataset.dtypes),
            )
            descriptions = tuple(d or "" for d in dataset.descriptions)
            band_tags = tuple(dict(dataset.tags(i)) for i in dataset.indexes)
    except RasterioError as error:
        raise failed_precondition(
            "UNREADABLE_RASTER",
            f"cannot open asset {asset.key!r}: {without_directories(str(error))}",
            asset_key=asset.key,
        ) from error
    header = (file_bands, grid, descriptions, band_tags)
    if key is not None:
        with _headers_lock:
            _headers[key] = header
            while len(_headers) > _HEADERS_KEPT:
                _headers.popitem(last=False)
    return header


def open_meta(asset: AssetView) -> RasterMeta:
    """Read an asset's grid and band metadata. Band metadata from the server wins over the
    file's (it is what clients see and may have been curated); the file fills the gaps."""
    file_bands, grid, descriptions, band_tags = _file_header(asset)
    width, height, count, transform, crs, block_shape, dtypes = grid
    server_bands = list(asset.bands) if len(asset.bands) == count else []
    bands = [
        {**file_band, **{k: v for k, v in server.items() if v is not None}} if server_bands else dict(file_band)
        for file_band, server in zip(file_bands, server_bands or file_bands, strict=True)
    ]

    def number(band: Mapping[str, Any], key: str, default: float) -> float:
        value = band.get(key)
        return default if value is None else float(value)

    return RasterMeta(
        path=asset.path,
        asset_key=asset.key,
        width=width,
        height=height,
        count=count,
        transform=transform,
        crs=crs,
        block_shape=(int(block_shape[0]), int(block_shape[1])),
        dtypes=dtypes,
        nodata=tuple(_nodata_value(band.get("nodata")) for band in bands),
        scales=tuple(number(band, "scale", 1.0) for band in bands),
        offsets=tuple(number(band, "offset", 0.0) for band in bands),
        units=tuple(band.get("unit") or None for band in bands),
        descriptions=descriptions,
        band_tags=band_tags,
        bands=tuple(bands),
    )


def chunk_windows(window: Window, block_shape: tuple[int, int], band_count: int, itemsize: int) -> list[Window]:
    """Block-aligned chunks covering ``window`` (row-major), each read in one call.

    Chunks are whole multiples of the file's blocks (about 512 x 512 pixels) shrunk so one
    read of ``band_count`` bands stays within a few tens of MB.
    """
    block_rows, block_cols = block_shape
    rows_per = max(block_rows, _CHUNK_EDGE // block_rows * block_rows)
    cols_per = max(block_cols, _CHUNK_EDGE // block_cols * block_cols)
    while rows_per * cols_per * band_count * itemsize > _CHUNK_READ_BYTES and (
        rows_per > block_rows or cols_per > block_cols
    ):
        if rows_per >= cols_per and rows_per > block_rows:
            rows_per = max(block_rows, rows_per // 2 // block_rows * block_rows)
        else:
            cols_per = max(block_cols, cols_per // 2 // block_cols * block_cols)
    row0, col0 = int(window.row_off), int(window.col_off)
    row1, col1 = row0 + int(window.height), col0 + int(window.width)
    if row1 <= row0 or col1 <= col0:
        return []
    windows = []
    for r in range(row0 // rows_per * rows_per, row1, rows_per):
        for c in range(col0 // cols_per * cols_per, col1, cols_per):
            r_lo, c_lo = max(r, row0), max(c, col0)
            windows.append(Window(c_lo, r_lo, min(c + cols_per, col1) - c_lo, min(r + rows_per, row1) - r_lo))
    return windows


# Open dataset handles, kept per thread across calls: opening a COG (header and
# IFDs) costs about as much as decoding a few blocks, and catalogue files never
# change. Keyed by path, size and mtime, so a rewritten file is reopened.
_HANDLES_PER_THREAD = 32
_thread_handles = threading.local()


def _handle(path: str) -> DatasetReader:
    handles: OrderedDict[tuple[str, int, int], DatasetReader] | None = getattr(_thread_handles, "lru", None)
    if handles is None:
        handles = _thread_handles.lru = OrderedDict()
    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
    except OSError:  # not a local file (e.g. a /vsi path): GDAL decides
        key = (path, -1, -1)
    dataset = handles.get(key)
    if dataset is not None and not dataset.closed:
        handles.move_to_end(key)
        return dataset
    dataset = open_stored(path)
    handles[key] = dataset
    while len(handles) > _HANDLES_PER_THREAD:
        _, oldest = handles.popitem(last=False)
        oldest.close()
    return dataset


# One pool for every call: threads (and the handles they hold) outlive a call.
_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _POOL_LOCK:
        if _pool is None or _pool._max_workers < workers:  # grow, never shrink
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="analytics-read")
        return _pool


def run_beside(workers: int, fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` on the shared pool while the caller goes on (inline when ``workers`` is 1)."""
    if workers > 1:
        return _shared_pool(workers).submit(fn, *args)
    done: Future[T] = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as error:  # handed to the caller through the future
        done.set_exception(error)
    return done


def parallel_map(workers: int) -> Callable[[Callable[[Any], T], Iterable[Any]], Iterator[T]] | None:
    """The shared pool's ``map`` for ``workers`` > 1 (results in order), else None."""
    return _shared_pool(workers).map if workers > 1 else None


class ChunkRunner:
    """Runs ``fn(datasets, task)`` over tasks on ``workers`` threads, ``datasets`` being this
    thread's open handles of ``paths`` (in that order).

    Results come back in task order (so reductions are deterministic), with at most
    ``ahead * workers`` tasks in flight (finished ones wait there for their turn, so ``ahead``
    bounds the results held: raise it when they are small); ``check_cancelled`` runs before every
    task, and the first exception stops the run.
    """

    def __init__(self, paths: Sequence[str], workers: int, check_cancelled: Callable[[], None], ahead: int = 2) -> None:
        self.paths = tuple(paths)
        self.workers = max(1, int(workers))
        self.check_cancelled = check_cancelled
        self.ahead = max(1, int(ahead))

    def _datasets(self) -> list[DatasetReader]:
        return [_handle(path) for path in self.paths]

    def _task(self, fn: Callable[[list[DatasetReader], W], T], task: W) -> T:
        self.check_cancelled()
        try:
            return fn(self._datasets(), task)
        except RasterioError as error:
            names = ", ".join(os.path.basename(path) for path in self.paths)
            message = f"cannot read {names}: {without_directories(str(error))}"
            raise failed_precondition("UNREADABLE_RASTER", message) from error

    def map(self, fn: Callable[[list[DatasetReader], W], T], tasks: Sequence[W]) -> Iterator[T]:
        """``fn(datasets, task)`` for every task, results in task order."""
        with bounded_gdal_cache():
            if self.workers == 1 or not tasks:
                for task in tasks:
                    yield self._task(fn, task)
                return
            # Even a single task goes to the pool: its threads hold open handles from earlier
            # calls, while the calling thread (one of several serving calls) may have none.
            yield from self._parallel(fn, tasks)

    def _parallel(self, fn: Callable[[list[DatasetReader], W], T], tasks: Iterable[W]) -> Iterator[T]:
        pending: deque[Future[T]] = deque()
        source = iter(tasks)
        executor = _shared_pool(self.workers)
        try:
            for task in source:
                pending.append(executor.submit(self._task, fn, task))
                if len(pending) >= self.ahead * self.workers:
                    break
            while pending:
                result = pending.popleft().result()
                self.check_cancelled()
                for task in source:
                    pending.append(executor.submit(self._task, fn, task))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()
            for future in pending:  # let started tasks end before the caller moves on
                if not future.cancelled():
                    with contextlib.suppress(Exception):
                        future.result()
