"""HTTP downloads of stored files: `GET|HEAD /v1/items/{item_id}/assets/{asset_key}`
and `GET|HEAD /v1/artifacts/{artifact_id}`.

Allowed by a bearer token (the scope and project rules of the gRPC
`DownloadAsset`) or by a signed URL (`assets.sign`), see `rest.access`.
Answers `Accept-Ranges: bytes`, `ETag` (the stored SHA-256), `Content-Type`
(the stored media type) and `Content-Length`; honours `Range` (206, one range
or several as `multipart/byteranges`, 416 when none is satisfiable),
`If-Range`, `If-None-Match` (304) and `If-Match` (412), see `rest.ranges`.
Bytes are streamed from storage a chunk at a time, never the whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Generator
from typing import Any, BinaryIO

from aiohttp import web

from geopera_kernel.server.domain.models import FileRef
from geopera_kernel.server.rest.access import Access, ResourceAccess
from geopera_kernel.server.rest.ranges import ByteRange, plan_response

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def etag_of(ref: FileRef) -> str:
    return f'"{ref.sha256}"'


def _cache_control(access: Access) -> str:
    # The bytes behind a resource never change (the ETag is their hash), but who may
    # read them can: private caches only, revalidated when a bearer token allowed it.
    if access.grant is not None:
        return f"private, max-age={max(0, int(access.grant.expires - time.time()))}"
    return "private, no-cache"


class Downloads:
    def __init__(self, access: ResourceAccess) -> None:
        self._access = access

    def add_routes(self, app: web.Application) -> None:
        # add_get also routes HEAD to the same handler (aiohttp sends no body for HEAD).
        app.router.add_get("/v1/items/{item_id}/assets/{asset_key}", self.asset)
        app.router.add_get("/v1/artifacts/{artifact_id}", self.artifact)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        item_id, key = request.match_info["item_id"], request.match_info["asset_key"]
        return await self._download(request, f"items/{item_id}/assets/{key}", "HTTP GET /v1/items/assets")

    async def artifact(self, request: web.Request) -> web.StreamResponse:
        name = f"artifacts/{request.match_info['artifact_id']}"
        return await self._download(request, name, "HTTP GET /v1/artifacts")

    async def _download(self, request: web.Request, resource_name: str, rpc: str) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            ref = await access.file(resource_name)
            if access.grant is None:
                with access.services.streams.hold(access.principal.id):
                    return await self._respond(request, access, ref)
            return await self._respond(request, access, ref)

        return await self._access.serve(request, rpc, body)

    async def _respond(self, request: web.Request, access: Access, ref: FileRef) -> web.StreamResponse:
        etag = etag_of(ref)
        size = ref.size_bytes
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": _cache_control(access)}
        plan = plan_response(request.headers, size, etag)
        if plan.status in (304, 412):
            return web.Response(status=plan.status, headers=headers)
        if plan.status == 416:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        ranges = plan.ranges or (ByteRange(0, size - 1),)
        response = web.StreamResponse(status=plan.status, headers=headers)
        parts: list[tuple[bytes, ByteRange]] = []
        closing = b""
        if len(plan.ranges) > 1:
            boundary = secrets.token_hex(16)
            parts = [(_part_header(boundary, ref.media_type, r, size), r) for r in ranges]
            closing = f"\r\n--{boundary}--\r\n".encode()
            response.content_type = f"multipart/byteranges; boundary={boundary}"
            response.content_length = sum(len(head) + r.length for head, r in parts) + len(closing)
        else:
            response.content_type = ref.media_type or "application/octet-stream"
            response.content_length = size if plan.status == 200 else ranges[0].length
            if plan.status == 206:
                response.headers["Content-Range"] = ranges[0].content_range(size)
        access.call.extra["range"] = request.headers.get("Range", "")[:200]
        await response.prepare(request)
        if request.method == "HEAD" or size == 0:
            await response.write_eof()
            return response
        sent = 0
        stream = await asyncio.to_thread(access.services.storage.open_read, ref.storage_key)
        try:
            if parts:
                for head, byte_range in parts:
                    await response.write(head)
                    sent += await _send(response, stream, byte_range)
                await response.write(closing)
            else:
                sent = await _send(response, stream, ranges[0])
            await response.write_eof()
        except (ConnectionError, OSError) as exc:
            # The client went away, or storage failed after the headers left: the
            # response is cut short (its Content-Length tells the client).
            log.info("download of %s ended early: %s", ref.storage_key, exc)
            access.call.extra["error"] = type(exc).__name__
            response.force_close()
        finally:
            stream.close()
            access.call.extra["bytes"] = sent
        return response


def _part_header(boundary: str, media_type: str, byte_range: ByteRange, size: int) -> bytes:
    return (
        f"\r\n--{boundary}\r\nContent-Type: {media_type or 'application/octet-stream'}\r\n"
        f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
    ).encode()


def _read_chunks(stream: BinaryIO, byte_range: ByteRange) -> Generator[bytes, None, None]:
    stream.seek(byte_range.start)
    remaining = byte_range.length
    while remaining > 0:
        data = stream.read(min(CHUNK_BYTES, remaining))
        if not data:
            raise OSError(f"the stored file ended {remaining} bytes early")
        remaining -= len(data)
        yield data


async def _send(response: web.StreamResponse, stream: BinaryIO, byte_range: ByteRange) -> int:
    sent = 0
    chunks = _read_chunks(stream, byte_range)
    with contextlib.closing(chunks):
        while (data := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(data)
            sent += len(data)
    return sent


def _openapi_download(summary: str, path_params: list[str]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_params
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in ("Range", "If-Range", "If-None-Match", "If-Match")
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
         "description": "signed URL (assets.sign): allowed with no Authorization header"}
        for name in ("expires", "key", "signature")
    ]  # fmt: skip
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    operation = {
        "summary": summary,
        "description": "Bearer token (scope and project rules of DownloadAsset) or a signed URL "
        "(assets.sign). ETag is the stored SHA-256.",
        "parameters": parameters,
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "the whole file"},
            "206": {"description": "the ranges asked (multipart/byteranges for several)"},
            "304": {"description": "If-None-Match matched"},
            "412": {"description": "If-Match did not match"},
            "416": {"description": "no range satisfiable"},
            "default": {"description": "an error", **error},
        },
    }
    return {"get": {**operation, "operationId": "download_" + path_params[-1]},
            "head": {**operation, "operationId": "head_" + path_params[-1]}}  # fmt: skip


def openapi_paths() -> dict[str, Any]:
    """The download routes, for the OpenAPI document."""
    return {
        "/v1/items/{item_id}/assets/{asset_key}": _openapi_download(
            "Download an item's asset (Range, ETag).", ["item_id", "asset_key"]
        ),
        "/v1/artifacts/{artifact_id}": _openapi_download(
            "Download an analytics artifact (Range, ETag).", ["artifact_id"]
        ),
    }
