"""Map tiles (WebMercatorQuad), previews and tile-set descriptions of a COG, rendered with
rio-tiler: its `Reader` reads and warps, `ImageData.rescale` stretches, `ImageData.render`
applies the colour map, turns the mask into alpha and encodes. Nothing here is hand-written
image code, so a tile equals rio-tiler's own rendering of the same tile.

Readers are kept open per thread (`TileRenderer`): opening a COG and parsing its header costs
more than reading one 256-pixel tile, and a rasterio dataset must not be shared by threads.
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numexpr
import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rio_tiler.colormap import cmap
from rio_tiler.errors import InvalidColorMapName, RioTilerError, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from geopera_kernel.raster.domain_errors import invalid_argument, not_found
from geopera_kernel.raster.inspect import embedded_statistics, rescale_range
from geopera_kernel.raster.types import RenderHint

TILE_SIZE: Final = 256
# WebMercatorQuad's deepest tile matrix (morecantile).
MAX_ZOOM: Final = 24
PREVIEW_MAX_SIZE: Final = 2048
# Tiles are served down to this many levels below the reader's minzoom. rio-tiler warps a
# tile at the raster's own resolution, so each level further out costs 4x: 3 levels stay
# under half a second for a Sentinel-2 tile, 7 take minutes for a small raster.
ZOOM_OUT_LEVELS: Final = 3
IMAGE_FORMATS: Final = {"png": "PNG", "webp": "WEBP"}
MEDIA_TYPES: Final = {"png": "image/png", "webp": "image/webp"}
# zlib level 1: the same pixels as the default level 6 in about a third of the time, ~10% larger.
_CREATION_OPTIONS: Final[dict[str, dict[str, Any]]] = {"png": {"ZLEVEL": 1}, "webp": {}}
MAX_EXPRESSION_LENGTH: Final = 300
# Band references (b1, b2, ...), numbers, operators, brackets and numexpr's functions; no
# attribute access, strings or subscripts reach numexpr.
_EXPRESSION_CHARACTERS: Final = re.compile(r"^[A-Za-z0-9_.+\-*/%()<>=!&|~, ]+$")
_BAND_REFERENCE: Final = re.compile(r"\bb(\d+)\b", re.ASCII)
_ATTRIBUTE: Final = re.compile(r"\.\s*[A-Za-z_]")
_HANDLES_PER_THREAD: Final = 16
# Bumped when the same inputs would render different pixels (a cache key, see RenderSpec.digest).
RENDER_VERSION: Final = "1"

Range = tuple[float, float]


@dataclass(frozen=True)
class RenderSpec:
    """What to draw: band indexes (1-based) or one rio-tiler expression (b1, b2, ...), one
    rescale range per output band (or one for all), an optional rio-tiler colour map name."""

    indexes: tuple[int, ...] = ()
    expression: str = ""
    rescale: tuple[Range, ...] = ()
    colormap: str = ""

    def digest(self) -> str:
        text = repr((RENDER_VERSION, self.indexes, self.expression, self.rescale, self.colormap))
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def output_bands(self) -> int:
        return 1 if self.expression else len(self.indexes)

    def check(self, band_count: int) -> None:
        """Raises INVALID_ARGUMENT for a spec the raster cannot honour (before any read)."""
        referenced = set(self.indexes)
        if self.expression:
            check_expression(self.expression)
            referenced = {int(n) for n in _BAND_REFERENCE.findall(self.expression)}
        wrong = sorted(index for index in referenced if not 1 <= index <= band_count)
        if wrong:
            raise invalid_argument(
                "INVALID_BANDS", f"band {wrong[0]} does not exist; the raster has bands 1..{band_count}", field="bands"
            )
        outputs = self.output_bands()
        if outputs not in (1, 3):
            # PNG and WebP carry grey or RGB plus the alpha of the mask.
            raise invalid_argument("INVALID_BANDS", "give 1 (grey or a colormap) or 3 (RGB) bands", field="bands")
        if self.rescale and len(self.rescale) not in (1, outputs):
            raise invalid_argument(
                "INVALID_RESCALE", f"give one rescale range or one per band ({outputs})", field="rescale"
            )
        if self.colormap:
            colormap_of(self.colormap)
            if outputs != 1:
                raise invalid_argument("COLORMAP_NEEDS_ONE_BAND", "a colormap applies to one band", field="colormap")


def check_expression(expression: str) -> None:
    if len(expression) > MAX_EXPRESSION_LENGTH or not _EXPRESSION_CHARACTERS.fullmatch(expression):
        raise invalid_argument(
            "INVALID_EXPRESSION",
            f"an expression is at most {MAX_EXPRESSION_LENGTH} characters of band names (b1, b2, ...), "
            "numbers, operators and brackets",
            field="expression",
        )
    if _ATTRIBUTE.search(expression) or not _BAND_REFERENCE.search(expression):
        raise invalid_argument(
            "INVALID_EXPRESSION", "an expression gives one band from b1, b2, ...", field="expression"
        )
    numbers = _BAND_REFERENCE.findall(expression)
    if any(n != str(int(n)) for n in numbers):
        raise invalid_argument("INVALID_EXPRESSION", "bands are b1, b2, ... (no leading zeros)", field="expression")
    try:  # numexpr's own parser and sanitizer, on a two-pixel stand-in
        result = numexpr.evaluate(
            expression, local_dict={f"b{n}": np.ones(2, np.float32) for n in numbers}, global_dict={}
        )
    except Exception as exc:  # SyntaxError, KeyError, ValueError, TypeError, ZeroDivisionError, ...
        raise invalid_argument(
            "INVALID_EXPRESSION", f"the expression does not parse: {exc}"[:300], field="expression"
        ) from exc
    if np.shape(result) != (2,):  # sum(), prod(): one number for the whole tile
        raise invalid_argument("INVALID_EXPRESSION", "an expression gives a value per pixel", field="expression")


def colormap_of(name: str) -> Any:
    try:
        return cmap.get(name.lower())
    except InvalidColorMapName:
        raise invalid_argument(
            "UNKNOWN_COLORMAP", f"unknown colormap {name!r} (rio-tiler names, e.g. viridis, rdbu)", field="colormap"
        ) from None


def colormap_names() -> list[str]:
    return sorted(cmap.list())


@dataclass(frozen=True)
class TileSet:
    """Where tiles exist: lon/lat bounds and the zoom levels from rio-tiler's reader."""

    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int
    band_count: int


def check_tile(z: int, x: int, y: int) -> None:
    if not 0 <= z <= MAX_ZOOM:
        raise invalid_argument("INVALID_TILE", f"z must be 0..{MAX_ZOOM}", field="z")
    side = 1 << z
    if not (0 <= x < side and 0 <= y < side):
        raise invalid_argument("INVALID_TILE", f"x and y must be 0..{side - 1} at zoom {z}", field="x")


def hint_from_embedded_statistics(path: str) -> RenderHint:
    """A render hint from the COG's embedded statistics (for rasters with none stored)."""
    with _opened(path) as dataset:
        ranges = [rescale_range(embedded_statistics(dataset.tags(index))) for index in dataset.indexes]
    return RenderHint(rescale=ranges, rgb_bands=[])


def symmetric_range(hint: RenderHint, band: int = 1) -> Range:
    """(-limit, limit) around zero: a diverging colour map then puts 0 at its midpoint."""
    stretch = hint.rescale[band - 1]
    limit = max(abs(stretch.min), abs(stretch.max)) or 1.0
    return (-limit, limit)


class TileRenderer:
    """Renders tiles and previews; blocking (call it from a worker thread)."""

    def __init__(self, handles_per_thread: int = _HANDLES_PER_THREAD) -> None:
        self._local = threading.local()
        self._handles_per_thread = handles_per_thread

    def tileset(self, path: str) -> TileSet:
        reader = self._reader(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            west, south, east, north = reader.get_geographic_bounds(rasterio.crs.CRS.from_epsg(4326))
        return TileSet((west, south, east, north), reader.minzoom, reader.maxzoom, _band_count(reader))

    def tile(self, path: str, z: int, x: int, y: int, spec: RenderSpec, *, scale: int = 1, fmt: str = "png") -> bytes:
        check_tile(z, x, y)
        reader = self._reader(path)
        spec.check(_band_count(reader))
        lowest = max(0, reader.minzoom - ZOOM_OUT_LEVELS)
        if z < lowest:
            raise not_found(
                "TILE_OUTSIDE_ZOOMS",
                f"tiles of this raster start at zoom {lowest} (its tilejson minzoom is {reader.minzoom})",
            )
        with _mapped_errors():
            image = reader.tile(x, y, z, tilesize=TILE_SIZE * scale, **_band_args(spec))
        return encode(image, spec, fmt)

    def preview(self, path: str, spec: RenderSpec, *, max_size: int = 1024, fmt: str = "png") -> bytes:
        reader = self._reader(path)
        spec.check(_band_count(reader))
        with _mapped_errors():
            image = reader.preview(max_size=max_size, **_band_args(spec))
        return encode(image, spec, fmt)

    def _reader(self, path: str) -> Reader:
        handles: OrderedDict[str, Reader] | None = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = OrderedDict()
        reader = handles.get(path)
        if reader is not None:
            handles.move_to_end(path)
            return reader
        with _mapped_errors():
            reader = Reader(path)
        handles[path] = reader
        while len(handles) > self._handles_per_thread:
            handles.popitem(last=False)[1].close()
        return reader


def _band_count(reader: Reader) -> int:
    assert reader.dataset is not None  # Reader opens it on construction
    return int(reader.dataset.count)


def encode(image: ImageData, spec: RenderSpec, fmt: str) -> bytes:
    """Stretch, colour and encode as rio-tiler does (`ImageData.rescale`, `ImageData.render`)."""
    if spec.rescale:
        image.rescale(in_range=spec.rescale)
    colormap = colormap_of(spec.colormap) if spec.colormap else None
    with warnings.catch_warnings(), _mapped_errors():
        # A raster without stretch is drawn over its data type's range, as rio-tiler warns.
        warnings.simplefilter("ignore")
        return image.render(img_format=IMAGE_FORMATS[fmt], colormap=colormap, **_CREATION_OPTIONS[fmt])


def _band_args(spec: RenderSpec) -> dict[str, Any]:
    if spec.expression:
        return {"expression": spec.expression}
    return {"indexes": spec.indexes} if spec.indexes else {}


@contextmanager
def _opened(path: str) -> Iterator[Any]:
    with _mapped_errors(), rasterio.open(path) as dataset:
        yield dataset


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except TileOutsideBounds as exc:
        raise not_found("TILE_OUTSIDE_BOUNDS", f"{exc}; see the tilejson for bounds and zooms") from None
    except RasterioIOError as exc:
        raise not_found("RASTER_FILE_MISSING", "the raster's file is gone (an expired artifact?)") from exc
    except (RioTilerError, RasterioError) as exc:
        raise invalid_argument("RENDER_FAILED", f"could not render: {exc}"[:300]) from exc


def parse_ranges(values: Sequence[str]) -> tuple[Range, ...]:
    """`rescale=min,max` (repeatable, one per band) as TiTiler spells it."""
    ranges = []
    for value in values:
        parts = value.split(",")
        try:
            low, high = (float(part) for part in parts)
        except ValueError:
            raise invalid_argument("INVALID_RESCALE", "rescale is min,max (numbers)", field="rescale") from None
        if not (low < high) or any(v != v or v in (float("inf"), float("-inf")) for v in (low, high)):
            raise invalid_argument("INVALID_RESCALE", "rescale needs finite min < max", field="rescale")
        ranges.append((low, high))
    return tuple(ranges)
