"""HTTP downloads of stored files: `GET|HEAD /v1/items/{item_id}/assets/{asset_key}`
and `GET|HEAD /v1/artifacts/{artifact_id}`.

Allowed by a bearer token (the scope and project rules of the gRPC
`DownloadAsset`) or by a signed URL (`assets.sign`), see `rest.access`.
Answers `Accept-Ranges: bytes`, `ETag` (the stored SHA-256), `Content-Type`
(the stored media type) and `Content-Length`; honours `Range` (206, one range
or several as `multipart/byteranges`, 416 when none is satisfiable),
`If-Range`, `If-None-Match` (304) and `If-Match` (412), see `rest.ranges`.
Bytes go by sendfile(2) from a stored file (a chunk at a time from any other
storage, or under TLS), never the whole file through memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import time
from collections.abc import Generator
from typing import Any, BinaryIO

from aiohttp import web

from geopera_kernel.server.domain.models import FileRef
from geopera_kernel.server.errors import not_found
from geopera_kernel.server.rest.access import Access, ResourceAccess
from geopera_kernel.server.rest.ranges import ByteRange, Plan, plan_response

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
        response = web.StreamResponse(status=plan.status, headers=headers)
        parts, closing = _lay_out(response, plan, ref)
        access.call.extra["range"] = request.headers.get("Range", "")[:200]
        if request.method == "HEAD" or size == 0:
            await response.prepare(request)
            await response.write_eof()
            return response
        stream = await _open(access, ref)
        sent = 0
        try:
            await response.prepare(request)
            for head, byte_range in parts:
                if head:  # a multipart part's own headers
                    await response.write(head)
                sent += await _send(request, response, stream, byte_range)
            if closing:
                await response.write(closing)
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


def _lay_out(response: web.StreamResponse, plan: Plan, ref: FileRef) -> tuple[list[tuple[bytes, ByteRange]], bytes]:
    """Sets the type and length of a 200 or 206 answer; returns its parts, each a
    header (empty for a single range) and a byte range, and what closes the body."""
    size = ref.size_bytes
    media_type = ref.media_type or "application/octet-stream"
    if len(plan.ranges) <= 1:
        byte_range = plan.ranges[0] if plan.ranges else ByteRange(0, size - 1)
        response.content_type = media_type
        response.content_length = byte_range.length
        if plan.status == 206:
            response.headers["Content-Range"] = byte_range.content_range(size)
        return [(b"", byte_range)], b""
    boundary = secrets.token_hex(16)
    head = f"\r\n--{boundary}\r\nContent-Type: {media_type}\r\nContent-Range: "
    parts = [(f"{head}{r.content_range(size)}\r\n\r\n".encode(), r) for r in plan.ranges]
    closing = f"\r\n--{boundary}--\r\n".encode()
    response.content_type = f"multipart/byteranges; boundary={boundary}"
    response.content_length = sum(len(head) + r.length for head, r in parts) + len(closing)
    return parts, closing


async def _open(access: Access, ref: FileRef) -> BinaryIO:
    try:
        return await asyncio.to_thread(access.services.storage.open_read, ref.storage_key)
    except FileNotFoundError:
        # Removed after its row was read: an artifact past its retention, swept meanwhile.
        raise not_found("FILE_NOT_FOUND", "the resource's bytes are no longer stored") from None


def _read_chunks(stream: BinaryIO, byte_range: ByteRange) -> Generator[bytes, None, None]:
    stream.seek(byte_range.start)
    remaining = byte_range.length
    while remaining > 0:
        data = stream.read(min(CHUNK_BYTES, remaining))
        if not data:
            raise OSError(f"the stored file ended {remaining} bytes early")
        remaining -= len(data)
        yield data


async def _send(request: web.Request, response: web.StreamResponse, stream: BinaryIO, byte_range: ByteRange) -> int:
    """Sends `byte_range` of `stream`: with sendfile(2) when it is a file on disk (no copy
    through Python; asyncio falls back to reads in a thread under TLS), else a chunk at a time."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    try:
        stream.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return await _send_chunks(response, stream, byte_range)
    sent = await asyncio.get_running_loop().sendfile(transport, stream, byte_range.start, byte_range.length)
    if sent < byte_range.length:
        raise OSError(f"the stored file ended {byte_range.length - sent} bytes early")
    return sent


async def _send_chunks(response: web.StreamResponse, stream: BinaryIO, byte_range: ByteRange) -> int:
    sent = 0
    chunks = _read_chunks(stream, byte_range)
    with contextlib.closing(chunks):
        while (data := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(data)
            sent += len(data)
    return sent


def _openapi_download(operation_id: str, summary: str, path_params: list[str]) -> dict[str, Any]:
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
    return {"get": {**operation, "operationId": f"{operation_id}_get"},
            "head": {**operation, "operationId": f"{operation_id}_head"}}  # fmt: skip


def openapi_paths() -> dict[str, Any]:
    """The download routes, for the OpenAPI document."""
    return {
        "/v1/items/{item_id}/assets/{asset_key}": _openapi_download(
            "items_assets_download", "Download an item's asset (Range, ETag).", ["item_id", "asset_key"]
        ),
        "/v1/artifacts/{artifact_id}": _openapi_download(
            "artifacts_download", "Download an analytics artifact (Range, ETag).", ["artifact_id"]
        ),
    }
