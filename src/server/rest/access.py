"""Who may GET a resource path over HTTP: the one check every resource route
(downloads, tiles, previews, STAC) runs.

A request is allowed by either

- a bearer token (`Authorization: Bearer <token>`), through the same edge as
  every call (request id, admission, readiness, authentication, the access
  log); the handler then applies the same scope and project rules as the gRPC
  `DownloadAsset` by handing `access.principal` to the domain service; or
- a valid URL signature for the request's path (or a prefix of it), with no
  header (see `geopera_kernel.server.signing`). The signature then stands for
  the reader: `access.principal` is `SIGNED_URL_READER`, allowed to read what
  the signed path names (the signer checked the caller's access when signing).
  When the query carries `signature`, the signature decides, whatever the header.

Use it from an aiohttp handler:

    async def tile(self, request: web.Request) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            item = await access.item(item_id)                # DomainError if not allowed
            ref = await access.asset_file(item_id, "data")   # or access.artifact_file(artifact_id)
            ...
            return web.Response(body=png, content_type="image/png")

        return await self.access.serve(request, "HTTP GET /v1/items/tiles", body)

`RestApi` (rest/app.py) owns the one `ResourceAccess` (`self.access`) and adds
each resource module's routes in `application()`, as `Downloads(self.access)` does.

A `DomainError` raised in `body` (or by the check) becomes the error JSON with
its HTTP status (401, 403, 404 ...); anything else is logged and answered 500
without details. `access.sign(path, ttl_seconds, prefix=...)` makes an absolute
signed URL (for STAC asset hrefs), `access.signed_query(prefix, ttl, prefix=True)`
the query of a prefix grant (for tile URL templates), after the handler checked
the caller may read what `path` names. Outside a request, `services.signer` and
`services.public_url` do the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.models import FileRef, ItemRecord
from geopera_kernel.server.edge.call import CallInfo, Edge
from geopera_kernel.server.edge.status import unexpected_error
from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.rest.responses import error_response
from geopera_kernel.server.signing import Grant

if TYPE_CHECKING:
    from geopera_kernel.server.services import Services

log = logging.getLogger(__name__)

# Stands in for the holder of a valid signed URL: it reads what the signed path names.
SIGNED_URL_READER = Principal(id="signed-url", kind="signed", scopes=frozenset({"admin"}))


@dataclass(frozen=True)
class Access:
    """A request allowed to proceed: by whom (`principal`), how (`grant` is set
    when a URL signature allowed it), and the services to answer it with."""

    principal: Principal
    call: CallInfo
    services: Services
    grant: Grant | None = None

    @property
    def signed(self) -> bool:
        return self.grant is not None

    async def item(self, item_id: str) -> ItemRecord:
        """The item, checked as `items.get` checks it (scope `catalog:read`, project)."""
        self.principal.require_scope("catalog:read")
        return await self.services.catalog.get_item(self.principal, item_id)

    async def asset_file(self, item_id: str, asset_key: str) -> FileRef:
        """An item's asset file, checked as its `DownloadAsset` is."""
        return await self.file(f"items/{item_id}/assets/{asset_key}")

    async def artifact_file(self, artifact_id: str) -> FileRef:
        """An artifact's file, checked as its `DownloadAsset` is (scope `analytics:read`)."""
        return await self.file(f"artifacts/{artifact_id}")

    async def file(self, resource_name: str) -> FileRef:
        """The stored file of `items/{item_id}/assets/{key}` or `artifacts/{id}`,
        checked as `DownloadAsset` checks it (scope, project, existence)."""
        return await self.services.catalog.asset_file(self.principal, resource_name)

    def sign(self, path: str, ttl_seconds: int = 0, *, prefix: bool = False) -> str:
        """An absolute signed URL of `path` (every path under it when `prefix`)."""
        url, _ = self.services.signer.signed_url(self.services.public_url, path, ttl_seconds, prefix=prefix)
        return url

    def signed_query(self, path: str, ttl_seconds: int = 0, *, prefix: bool = False) -> str:
        """Just the signature query of `path` (for a template such as
        `{public_url}/v1/items/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?{query}`
        under the prefix `/v1/items/{id}/tiles/`)."""
        query, _ = self.services.signer.signed_query(path, ttl_seconds, prefix=prefix)
        return query


_REQUEST_ID = "geopera_request_id"


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` signal: every response of a resource route names
    its request id, streamed ones included."""
    request_id = request.get(_REQUEST_ID)
    if request_id and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request_id


AccessBody = Callable[[Access], Awaitable[web.StreamResponse]]


class ResourceAccess:
    """Serves as soon as the HTTP port listens; answers 503 NOT_READY until
    the services are attached."""

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._services: Services | None = None

    def attach(self, services: Services) -> None:
        self._services = services

    async def serve(self, request: web.Request, rpc: str, body: AccessBody) -> web.StreamResponse:
        """Runs `body` for an allowed request; answers the error JSON otherwise."""
        edge = self._edge
        call = edge.begin(rpc, request.headers.get("X-Request-Id"))
        code = "OK"
        try:
            request[_REQUEST_ID] = call.request_id  # set on the response as it is prepared
            edge.admit(call)
            access = await self._allow(request, call)
            return await body(access)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            if isinstance(exc, DomainError):
                error = exc
            else:
                log.exception("unhandled error in %s (request %s)", request.path, call.request_id)
                error = unexpected_error(exc, call.request_id)
            code = error.code.name
            return error_response(error, call.request_id)
        finally:
            edge.end(call, code)

    async def _allow(self, request: web.Request, call: CallInfo) -> Access:
        services = self._services
        if services is None:
            raise DomainError(Code.UNAVAILABLE, "NOT_READY", "the server is starting; retry shortly")
        if "signature" in request.query:
            grant = services.signer.verify(request.path, request.query)
            call.principal = SIGNED_URL_READER
            call.extra["signature_key"] = grant.key_id
            return Access(SIGNED_URL_READER, call, services, grant)
        principal = await self._edge.authenticate(call, request.headers.get("Authorization"))
        return Access(principal, call, services)
