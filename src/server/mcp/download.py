"""The MCP `assets_download` tool: a link a person can open, not bytes.

An agent that found a result (an item's asset, an analytics output) asks for
it to be downloaded; what it can hand to a person is a URL, so the tool signs
one with `assets.sign` (the kernel applies the download's scope and project
rules) and answers it with what the file is. Bytes never pass through the
agent's context.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from geopera.v1 import catalog_pb2
from geopera_kernel.server.api import jsonview
from geopera_kernel.server.api.registry import OperationRegistry
from geopera_kernel.server.mcp.kernel import Kernel, KernelError

ASSETS_DOWNLOAD = "assets_download"
SIGN_OPERATION = "assets.sign"
ITEMS_GET = "items.get"
MAX_TTL_SECONDS = 7 * 24 * 3600

DESCRIPTION = (
    "A download link for an item's asset or an analytics output (artifact) that you can give to a person: an HTTP"
    " URL that works in a browser, with curl, in QGIS or GDAL (`/vsicurl/<url>`) with no token, until"
    " `expire_time` (`ttl_seconds`, default 3600, at most 604800). It is signed with `assets.sign`; the file"
    " itself is not returned. Name the file by `resource_name` (the `href` of an asset or an output:"
    " `items/{item_id}/assets/{asset_key}` or `artifacts/{artifact_id}`), by `item_id` and `asset_key`, or by"
    " `artifact_id`. For an item's asset the answer also says its media type, size and SHA-256. Anyone holding"
    " the URL can read the file until it expires: give it only to whom may see it.\n\n"
    "Scope `catalog:read` (an artifact also needs `analytics:read`); side effect: read."
)

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resource_name": {
            "type": "string",
            "minLength": 1,
            "description": "`items/{item_id}/assets/{asset_key}` or `artifacts/{artifact_id}` (an href).",
        },
        "item_id": {"type": "string", "minLength": 1, "description": "The item, `it_...` (with `asset_key`)."},
        "asset_key": {"type": "string", "minLength": 1, "description": "The item's asset, e.g. `data`."},
        "artifact_id": {"type": "string", "minLength": 1, "description": "An analytics output, `art_...`."},
        "ttl_seconds": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TTL_SECONDS,
            "default": 3600,
            "description": "How long the link works, in seconds.",
        },
    },
    "additionalProperties": False,
}


def _invalid(message: str, violations: list[dict[str, str]]) -> KernelError:
    return KernelError("INVALID_ARGUMENT", "INVALID_TOOL_ARGUMENTS", message[:500],
                       field_violations=violations, expected_schema=INPUT_SCHEMA)  # fmt: skip


def resource_name_of(args: dict[str, Any]) -> str:
    """The one resource the arguments name, by exactly one of the three ways."""
    violations = [
        {"field": ".".join(map(str, e.absolute_path)) or "arguments", "description": e.message}
        for e in jsonschema.Draft202012Validator(INPUT_SCHEMA).iter_errors(args)
    ]
    if violations:
        raise _invalid("; ".join(v["description"] for v in violations), violations)
    ways = [name for name in ("resource_name", "item_id", "artifact_id") if name in args]
    if len(ways) != 1 or ("item_id" in args) != ("asset_key" in args):
        message = "name the file by resource_name, by item_id with asset_key, or by artifact_id (one of them)"
        raise _invalid(message, [{"field": "arguments", "description": message}])
    if "resource_name" in args:
        return str(args["resource_name"])
    if "artifact_id" in args:
        return f"artifacts/{args['artifact_id']}"
    return f"items/{args['item_id']}/assets/{args['asset_key']}"


async def download_link(kernel: Kernel, registry: OperationRegistry, args: dict[str, Any]) -> dict[str, Any]:
    """Signs the resource's URL and says what the file is. Raises `KernelError`."""
    name = resource_name_of(args)
    sign = registry.get(SIGN_OPERATION)
    if sign is None:  # a registry without it: nothing to sign with
        raise KernelError("UNIMPLEMENTED", "UNKNOWN_OPERATION", f"this kernel has no {SIGN_OPERATION}")
    params = catalog_pb2.AssetsSignParams(resource_name=name, ttl_seconds=int(args.get("ttl_seconds", 0)))
    signed = await kernel.execute(sign, params)
    assert isinstance(signed, catalog_pb2.AssetsSignResult)  # the registry's
    answer: dict[str, Any] = {"resource_name": name, **jsonview.to_json(signed)}
    parts = name.split("/")
    items_get = registry.get(ITEMS_GET)
    if len(parts) == 4 and parts[0] == "items" and items_get is not None:
        # The signing just read the asset with the same rights: this cannot be refused for access.
        item = await kernel.execute(items_get, catalog_pb2.ItemsGetParams(item_id=parts[1]))
        assert isinstance(item, catalog_pb2.ItemsGetResult)
        asset = item.item.assets.get(parts[3])
        if asset is not None:
            answer.update(media_type=asset.media_type, size_bytes=asset.size_bytes, sha256=asset.sha256)
    answer["how_to_open"] = (
        "Open the url in a browser, or: curl -o <file> '<url>'; GDAL/rasterio: rio info /vsicurl/<url>;"
        " QGIS: Layer > Add Raster Layer, source type Protocol: HTTP(S), with the url."
    )
    return answer
