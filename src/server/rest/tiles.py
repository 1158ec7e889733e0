"""Map tiles, previews and TileJSON of items and analytics artifacts on the HTTP projection:

    GET /v1/{items|artifacts}/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}[@2x].{png|webp}
    GET /v1/{items|artifacts}/{id}/preview.{png|webp}[?max_size=1024]
    GET /v1/{items|artifacts}/{id}/tilejson.json[?tile_format=webp&tile_scale=2]

Same caller rules as downloading the file (items: `catalog:read`, artifacts: `analytics:read`,
a member of the owning project). The render parameters are in `tile_params`; tilejson passes
them on in its tile URL template. Rendering blocks, so it runs on a bounded pool of threads
(`RENDER_THREADS`); requests beyond that wait their turn. A tile answers a strong ETag (same
file, parameters and tile: same bytes) and is cached privately.

Who may: a bearer token, or a URL signature (`rest/access.py`, one check for every resource
route). tilejson answers a signed tile URL template (a prefix grant over the resource's
`tiles/`) for clients that cannot send headers (QGIS XYZ, Leaflet, MapLibre) when asked with
`?signed=true` (`ttl_seconds`, default 1 h, at most 7 days) and whenever the tilejson call was
itself signed; a template never outlives the signature that fetched it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from geopera_kernel.raster.render import (
    IMAGE_FORMATS,
    MEDIA_TYPES,
    PREVIEW_MAX_SIZE,
    RenderSpec,
    TileRenderer,
    hint_from_embedded_statistics,
)
from geopera_kernel.raster.types import RenderHint
from geopera_kernel.server.domain.catalog.render_sources import RenderSource
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.rest.access import Access, ResourceAccess
from geopera_kernel.server.rest.query_numbers import is_whole_number, whole_number
from geopera_kernel.server.rest.tile_params import RENDER_PARAMS, hint_of, render_spec
from geopera_kernel.server.signing import DEFAULT_TTL_SECONDS, ttl_or_default

T = TypeVar("T")

# GDAL reads, warps and encodes with the GIL released: a few threads per core keep the
# cores busy while some wait on the disk.
RENDER_THREADS: Final = min(16, 4 * (os.cpu_count() or 1))
TILE_MATRIX_SET: Final = "WebMercatorQuad"
_TILE_NAME = re.compile(r"(?P<y>\d{1,8})(?:@(?P<scale>[1-4])x)?\.(?P<fmt>[a-z]+)", re.ASCII)
_MAX_CACHED_HINTS: Final = 1024
CACHE_ITEMS: Final = "private, max-age=86400"
# Artifacts are removed after the retention; tilejson may carry a signature that expires.
CACHE_SHORT: Final = "private, max-age=300"
KINDS: Final = ("items", "artifacts")


class TileRoutes:
    def __init__(self, access: ResourceAccess, threads: int = RENDER_THREADS) -> None:
        self._access = access
        self._renderer = TileRenderer()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tiles")
        self._slots = asyncio.Semaphore(threads)
        # Artifacts store no render hint: it is read from the file's embedded statistics once.
        self._hints: dict[str, RenderHint] = {}

    def register(self, app: web.Application) -> None:
        for kind in KINDS:
            base = f"/v1/{kind}/{{resource_id}}"
            app.router.add_get(
                f"{base}/tiles/{TILE_MATRIX_SET}/{{z}}/{{x}}/{{tile}}", functools.partial(self.tile, kind)
            )
            app.router.add_get(f"{base}/preview.{{fmt}}", functools.partial(self.preview, kind))
            app.router.add_get(f"{base}/tilejson.json", functools.partial(self.tilejson, kind))
        app.on_cleanup.append(self._close)

    async def _close(self, _app: web.Application) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def tile(self, kind: str, request: web.Request) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            z, x, y, scale, fmt = tile_address(request.match_info)
            source, spec = await self._resolve(kind, request, access)
            etag = _etag(source, spec, f"{z}/{x}/{y}@{scale}.{fmt}")
            cache = CACHE_ITEMS if source.immutable else CACHE_SHORT
            if _not_modified(request, etag):
                return _not_modified_response(etag, cache)
            data = await self._blocking(self._renderer.tile, source.path, z, x, y, spec, scale=scale, fmt=fmt)
            return _image(data, fmt, etag, cache)

        return await self._access.serve(request, "HTTP GET /v1/tiles", body)

    async def preview(self, kind: str, request: web.Request) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            fmt = image_format(request.match_info["fmt"])
            max_size = _int_param(request, "max_size", 1024, 16, PREVIEW_MAX_SIZE)
            source, spec = await self._resolve(kind, request, access)
            etag = _etag(source, spec, f"preview/{max_size}.{fmt}")
            cache = CACHE_ITEMS if source.immutable else CACHE_SHORT
            if _not_modified(request, etag):
                return _not_modified_response(etag, cache)
            data = await self._blocking(self._renderer.preview, source.path, spec, max_size=max_size, fmt=fmt)
            return _image(data, fmt, etag, cache)

        return await self._access.serve(request, "HTTP GET /v1/preview", body)

    async def tilejson(self, kind: str, request: web.Request) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            fmt = image_format(request.query.get("tile_format", "png"))
            scale = _int_param(request, "tile_scale", 1, 1, 4)
            source, _spec = await self._resolve(kind, request, access)
            tileset = await self._blocking(self._renderer.tileset, source.path)
            resource_id = request.match_info["resource_id"]
            suffix = f"@{scale}x" if scale > 1 else ""
            params = urlencode([(key, value) for key, value in request.query.items() if key in RENDER_PARAMS])
            tiles = f"/v1/{kind}/{resource_id}/tiles/"
            if access.signed or request.query.get("signed") == "true":
                signature = access.signed_query(tiles, _template_ttl(request, access), prefix=True)
                params = "&".join(filter(None, (signature, params)))
            base = access.services.public_url or f"{request.scheme}://{request.host}"
            template = f"{base}{tiles}{TILE_MATRIX_SET}/{{z}}/{{x}}/{{y}}{suffix}.{fmt}" + (
                f"?{params}" if params else ""
            )
            west, south, east, north = tileset.bounds
            document = {
                "tilejson": "3.0.0",
                "name": resource_id,
                "version": "1.0.0",
                "scheme": "xyz",
                "tiles": [template],
                "minzoom": tileset.minzoom,
                "maxzoom": tileset.maxzoom,
                "bounds": [west, south, east, north],
                "center": [(west + east) / 2, (south + north) / 2, tileset.minzoom],
            }
            return web.json_response(document, headers={"Cache-Control": CACHE_SHORT})

        return await self._access.serve(request, "HTTP GET /v1/tilejson", body)

    async def _resolve(self, kind: str, request: web.Request, access: Access) -> tuple[RenderSource, RenderSpec]:
        """The caller may read the resource (or this raises); what to draw, and how."""
        catalog = access.services.catalog
        resource_id = request.match_info["resource_id"]
        if kind == "items":
            source = await catalog.item_render_source(access.principal, resource_id, request.query.get("asset", ""))
        else:
            source = await catalog.artifact_render_source(access.principal, resource_id)
        hint = hint_of(source.render) if source.render else await self._embedded_hint(source.path)
        spec = render_spec(request.query, hint, source.bands, diverging=source.diverging)
        spec.check(len(hint.rescale))
        return source, spec

    async def _embedded_hint(self, path: str) -> RenderHint:
        hint = self._hints.get(path)
        if hint is None:
            hint = await self._blocking(hint_from_embedded_statistics, path)
            if len(self._hints) >= _MAX_CACHED_HINTS:
                self._hints.clear()
            self._hints[path] = hint
        return hint

    async def _blocking(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))


def tile_address(match: Any) -> tuple[int, int, int, int, str]:
    """z, x, y, scale and format from the path, or INVALID_TILE."""
    name = _TILE_NAME.fullmatch(match["tile"])
    z, x = match["z"], match["x"]
    if name is None or not (is_whole_number(z) and is_whole_number(x) and len(z) <= 2 and len(x) <= 8):
        raise invalid_argument(
            "INVALID_TILE", "a tile is {z}/{x}/{y}.png, {y}@2x.png or {y}.webp with whole numbers", field="tile"
        )
    return int(z), int(x), int(name["y"]), int(name["scale"] or 1), image_format(name["fmt"])


def image_format(fmt: str) -> str:
    if fmt not in IMAGE_FORMATS:
        raise invalid_argument("INVALID_FORMAT", f"image format is one of {', '.join(IMAGE_FORMATS)}", field="format")
    return fmt


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = whole_number(raw)
    if value is None or not low <= value <= high:
        raise invalid_argument("INVALID_PARAMETER", f"{name} is a whole number {low}..{high}", field=name)
    return value


def _etag(source: RenderSource, spec: RenderSpec, what: str) -> str:
    digest = hashlib.blake2b(f"{source.sha256}|{spec.digest()}|{what}".encode(), digest_size=16).hexdigest()
    return f'"{digest}"'


def _not_modified(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match", "")
    return wanted.strip() == "*" or etag in (tag.strip().removeprefix("W/") for tag in wanted.split(","))


def _cache_headers(etag: str, cache: str) -> dict[str, str]:
    # Private: the answer depends on who asked (Vary), though not the bytes once allowed.
    return {"ETag": etag, "Cache-Control": cache, "Vary": "Authorization"}


def _not_modified_response(etag: str, cache: str) -> web.Response:
    return web.Response(status=304, headers=_cache_headers(etag, cache))


def _image(data: bytes, fmt: str, etag: str, cache: str) -> web.Response:
    return web.Response(body=data, content_type=MEDIA_TYPES[fmt], headers=_cache_headers(etag, cache))


def _template_ttl(request: web.Request, access: Access) -> int:
    """The requested lifetime of a signed template (`ttl_seconds`, 0 or absent: 1 h), cut
    to what is left of the signature that allowed this call, if one did."""
    requested = whole_number(request.query.get("ttl_seconds", "0"))
    if requested is None:
        raise invalid_argument("INVALID_TTL", "ttl_seconds is a whole number of seconds", field="ttl_seconds")
    ttl = ttl_or_default(requested or DEFAULT_TTL_SECONDS)
    if access.grant is not None:
        ttl = min(ttl, access.grant.expires - int(time.time()))
    return max(ttl, 1)
