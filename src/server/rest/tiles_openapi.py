"""The tile, preview and TileJSON routes (`rest/tiles.py`) in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from geopera_kernel.server.rest.openapi_parts import ERROR_CONTENT, path_param, query_param
from geopera_kernel.server.rest.tiles import KINDS, TILE_MATRIX_SET

_RENDER_QUERY = [
    ("asset", "items only: which asset (default the first GeoTIFF)"),
    ("bands", "1 or 3 comma-separated band indexes (1-based) or names: `3,2,1`, `nir`, `B08`"),
    ("expression", "an index of the band catalogue (`NDVI`, `NDWI`, ...) or a rio-tiler expression over b1, b2, ..."),
    ("rescale", "`min,max`, once or once per band (repeat the parameter); default from the embedded statistics"),
    ("colormap", "a rio-tiler colour map name (one band): viridis, rdylgn, rdbu, ..."),
]
_SIGNATURE_QUERY = [
    (name, "signed URL (a tilejson template's prefix grant): allowed with no Authorization header")
    for name in ("expires", "key", "prefix", "signature")
]
_ID_PARAM = {"items": "item_id", "artifacts": "artifact_id"}
_SCOPE = {"items": "catalog:read", "artifacts": "analytics:read"}


def _query(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [query_param(name, text) for name, text in pairs]


def _path(names: list[str]) -> list[dict[str, Any]]:
    return [path_param(name) for name in names]


def _operation(operation_id: str, summary: str, kind: str, parameters: list[dict[str, Any]], ok: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": f"Bearer token with `{_SCOPE[kind]}` in the owning project (as downloading it), or a "
        "signed URL. Rendered with rio-tiler from the stored render hint (true colour for multi-band "
        "reflectance, stretched from the embedded statistics; a change-detection difference diverging "
        "around zero); nodata is transparent.",
        "parameters": parameters,
        "security": [{"bearer": []}, {}],
        "responses": {"200": {"description": ok}, "304": {"description": "If-None-Match matched"}, "default": {
            "description": "an error (400 bad parameters, 404 outside the bounds or unknown)", **ERROR_CONTENT}},
    }  # fmt: skip


def openapi_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in KINDS:
        id_param = _ID_PARAM[kind]
        base = f"/v1/{kind}/{{{id_param}}}"
        render = _query(_RENDER_QUERY if kind == "items" else _RENDER_QUERY[1:])
        paths[f"{base}/tiles/{TILE_MATRIX_SET}/{{z}}/{{x}}/{{tile}}"] = {
            "get": _operation(
                f"{kind}_tile",
                "A map tile: `{y}.png`, `{y}@2x.png` (512 px), `{y}.webp`.",
                kind,
                _path([id_param, "z", "x", "tile"]) + render + _query(_SIGNATURE_QUERY),
                "image/png or image/webp",
            )
        }
        paths[f"{base}/preview.{{format}}"] = {
            "get": _operation(
                f"{kind}_preview",
                "The whole raster as one image (`preview.png`, `preview.webp`), at most `max_size` px a side.",
                kind,
                _path([id_param, "format"]) + render + _query([("max_size", "16..2048 (default 1024)")]),
                "image/png or image/webp",
            )
        }
        paths[f"{base}/tilejson.json"] = {
            "get": _operation(
                f"{kind}_tilejson",
                "TileJSON 3.0.0: bounds, zooms and the tile URL template (render parameters passed on).",
                kind,
                _path([id_param])
                + render
                + _query(
                    [
                        ("tile_format", "png (default) or webp"),
                        ("tile_scale", "1..4: `@2x` tiles for 2"),
                        ("signed", "`true`: a signed template (prefix grant) for clients that send no header"),
                        ("ttl_seconds", "the signed template's lifetime (default 3600, at most 7 days)"),
                    ]
                ),
                "application/json (TileJSON)",
            )
        }
    return paths
