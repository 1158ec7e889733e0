"""The STAC API (STAC API 1.0.0: core, collections, ogcapi-features, item-search)
at `/v1/stac` on the HTTP projection. Same bearer tokens, scope
(`catalog:read`) and project rules as items.list and items.get: each project the
caller can read is one collection; searching uses the catalogue's own item search.
Documents are built in stac_items.py, parameters read in stac_search.py."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from geopera_kernel.server.api.execute import reject_nul_json
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.models import ItemRecord, ProjectRecord
from geopera_kernel.server.edge.call import CallInfo
from geopera_kernel.server.errors import invalid_argument, not_found, permission_denied
from geopera_kernel.server.rest import stac_items as docs
from geopera_kernel.server.rest.access import Access, ResourceAccess
from geopera_kernel.server.rest.stac_items import GEOJSON, STAC_ROOT, StacUrls
from geopera_kernel.server.rest.stac_search import StacSearch, from_body, from_query_string

if TYPE_CHECKING:
    from geopera_kernel.server.services import Services

SCOPE = "catalog:read"
_PROJECTS_PAGE = 1000
# How long an asset href of a STAC document opens with no header (signing.py's bounds).
ASSET_URL_TTL_SECONDS = 3600

Answer = Callable[["Services", CallInfo, Principal, StacUrls], Awaitable[web.Response]]


def _json(body: dict[str, Any], call: CallInfo, media_type: str = docs.JSON) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        content_type=media_type,
        headers={"X-Request-Id": call.request_id},
    )


def signed_asset_url(services: Services, base: str) -> Callable[[str, str], str]:
    """Asset hrefs: each asset's HTTP download route, signed, so that any client
    (GDAL's /vsicurl/, QGIS, a browser) opens it with no header for an hour.
    Called only for items the caller was just allowed to read."""

    def href(item_id: str, key: str) -> str:
        path = f"/v1/items/{item_id}/assets/{key}"
        url, _ = services.signer.signed_url(base, path, ASSET_URL_TTL_SECONDS)
        return url

    return href


class StacApi:
    """Bearer tokens only: a URL signature grants one resource path, never a
    listing or a search (its reader stands for no one's project memberships)."""

    def __init__(self, access: ResourceAccess, public_url: str = "") -> None:
        self._access = access
        self._public_url = public_url

    def add_routes(self, router: web.UrlDispatcher) -> None:
        root = STAC_ROOT
        for path, handler in (
            (root, self.landing_page),
            (root + "/", self.landing_page),
            (root + "/conformance", self.conformance),
            (root + "/collections", self.collections),
            (root + "/collections/{collection_id}", self.collection),
            (root + "/collections/{collection_id}/items", self.collection_items),
            (root + "/collections/{collection_id}/items/{item_id}", self.item),
            (root + "/search", self.search_get),
        ):
            router.add_get(path, handler)
        router.add_post(root + "/search", self.search_post)

    async def _serve(self, request: web.Request, name: str, answer: Answer) -> web.StreamResponse:
        async def body(access: Access) -> web.StreamResponse:
            if access.signed:
                raise permission_denied("SIGNATURE_NOT_ACCEPTED", "the STAC API takes a bearer token, not a signed URL")
            access.principal.require_scope(SCOPE)
            # Links name GEOPERA_PUBLIC_URL when set (a proxy in front), else the
            # address the caller reached (the Host it sent).
            base = self._public_url or f"{request.scheme}://{request.host}"
            urls = StacUrls(base, signed_asset_url(access.services, base))
            return await answer(access.services, access.call, access.principal, urls)

        return await self._access.serve(request, f"HTTP {request.method} {STAC_ROOT}{name}", body)

    async def landing_page(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            projects = await _visible_projects(services, principal)
            return _json(docs.landing_page(urls, projects), call)

        return await self._serve(request, "", answer)

    async def conformance(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            return _json({"conformsTo": list(docs.CONFORMANCE)}, call)

        return await self._serve(request, "/conformance", answer)

    async def collections(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            catalog = services.catalog
            documents = [
                docs.collection(urls, project, await catalog.project_extent(principal, project.id))
                for project in await _visible_projects(services, principal)
            ]
            return _json(docs.collections(urls, documents), call)

        return await self._serve(request, "/collections", answer)

    async def collection(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            catalog = services.catalog
            project = await catalog.get_project(principal, request.match_info["collection_id"])
            return _json(docs.collection(urls, project, await catalog.project_extent(principal, project.id)), call)

        return await self._serve(request, "/collections/{id}", answer)

    async def collection_items(self, request: web.Request) -> web.StreamResponse:
        """OGC API Features' items of one collection: bbox, datetime, limit, paging."""

        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            project = await services.catalog.get_project(principal, request.match_info["collection_id"])
            search = from_query_string(request.query)
            if search.collections or search.ids or search.intersects is not None:
                raise invalid_argument(
                    "INVALID_SEARCH", "a collection's items take bbox, datetime, limit and token; use /search",
                    field="collections" if search.collections else "ids" if search.ids else "intersects",
                )  # fmt: skip
            records, token = await services.catalog.list_items(principal, search.query([project.id]))
            return _item_page(request, urls, urls.items(project.id), records, token, call)

        return await self._serve(request, "/collections/{id}/items", answer)

    async def item(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            project_id, item_id = request.match_info["collection_id"], request.match_info["item_id"]
            catalog = services.catalog
            await catalog.get_project(principal, project_id)
            record = await catalog.get_item(principal, item_id)
            if record.project_id != project_id:
                raise not_found("ITEM_NOT_FOUND", f"collection {project_id!r} has no item {item_id!r}", item_id=item_id)
            return _json(docs.item(urls, record), call, GEOJSON)

        return await self._serve(request, "/collections/{id}/items/{item_id}", answer)

    async def search_get(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            search = from_query_string(request.query)
            records, token = await _search(services, principal, search)
            return _item_page(request, urls, urls.root + "/search", records, token, call)

        return await self._serve(request, "/search", answer)

    async def search_post(self, request: web.Request) -> web.StreamResponse:
        async def answer(services: Services, call: CallInfo, principal: Principal, urls: StacUrls) -> web.Response:
            body = await _json_body(request)
            search = from_body(body)
            records, token = await _search(services, principal, search)
            href = urls.root + "/search"
            links = [docs.link("self", href, GEOJSON)]
            if token:
                links.append(docs.next_link(href, token, post_body=body))
            return _json(docs.item_collection(urls, records, links), call, GEOJSON)

        return await self._serve(request, "/search", answer)


async def _visible_projects(services: Services, principal: Principal) -> list[ProjectRecord]:
    """Every project the caller can read (each is a collection), in id order."""
    projects: list[ProjectRecord] = []
    token = ""
    while True:
        page, token = await services.catalog.list_projects(principal, _PROJECTS_PAGE, token)
        projects += page
        if not token:
            return projects


async def _search(services: Services, principal: Principal, search: StacSearch) -> tuple[list[ItemRecord], str]:
    """Items of the named collections, else of every collection the caller can read."""
    project_ids = list(search.collections)
    if not project_ids:
        project_ids = [p.id for p in await _visible_projects(services, principal)]
        if not project_ids:
            return [], ""
    return await services.catalog.list_items(principal, search.query(project_ids))


def _item_page(
    request: web.Request, urls: StacUrls, href: str, records: list[ItemRecord], token: str, call: CallInfo
) -> web.Response:
    """A page of items found by a GET (a collection's items or /search), linked to itself
    and, when more follow, to the next page."""
    links = [docs.link("self", urls.with_query(href, request.query.items()), GEOJSON)]
    if token:
        links.append(docs.next_link(urls.with_query(href, _with_token(request, token)), token))
    return _json(docs.item_collection(urls, records, links), call, GEOJSON)


def _with_token(request: web.Request, token: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query.items() if k != "token"] + [("token", token)]


async def _json_body(request: web.Request) -> Any:
    try:
        body = await request.json() if request.can_read_body else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_argument("INVALID_SEARCH", "the body is not JSON", field="body") from None
    except web.HTTPRequestEntityTooLarge as exc:  # past the application's client_max_size
        raise invalid_argument("BODY_TOO_LARGE", f"the body is too large ({exc.text})"[:200], field="body") from None
    try:
        reject_nul_json(body)
    except RecursionError:  # what the JSON parser takes, walking it may not
        raise invalid_argument("INVALID_SEARCH", "the body is nested too deeply", field="body") from None
    return body
