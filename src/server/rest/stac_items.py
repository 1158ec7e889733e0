"""The STAC documents (STAC 1.0.0, STAC API 1.0.0) of the catalogue's records:
the landing page, a project as a Collection, an item as an Item, a page of items
as an ItemCollection. Plain functions of records and the URLs to link to; the
routes are in stac.py.

A project is a STAC collection (its id is the project id): it is the unit of
access, so what a caller may see is exactly a set of collections. An item's
own `collection_id` (a grouping inside its project) is the property
`geopera:collection`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from geopera_kernel.server.domain.models import ItemRecord, ProjectExtent, ProjectRecord

STAC_VERSION = "1.0.0"
STAC_ROOT = "/v1/stac"
JSON = "application/json"
GEOJSON = "application/geo+json"
CONFORMANCE = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
)
# Asset key -> the URL a client opens it at (see `StacUrls.asset`).
AssetHref = Callable[[str, str], str]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StacUrls:
    """Absolute URLs under the address the caller reached the server at."""

    base: str  # scheme://host[:port]
    asset: AssetHref

    @property
    def root(self) -> str:
        return self.base + STAC_ROOT

    def collection(self, project_id: str) -> str:
        return f"{self.root}/collections/{quote(project_id, safe='')}"

    def items(self, project_id: str) -> str:
        return self.collection(project_id) + "/items"

    def item(self, project_id: str, item_id: str) -> str:
        return f"{self.items(project_id)}/{quote(item_id, safe='')}"

    def with_query(self, url: str, query: Iterable[tuple[str, str]]) -> str:
        encoded = urlencode(list(query))
        return f"{url}?{encoded}" if encoded else url


def link(rel: str, href: str, media_type: str = JSON, **extra: Any) -> dict[str, Any]:
    return {"rel": rel, "href": href, "type": media_type, **extra}


def landing_page(urls: StacUrls, projects: Iterable[ProjectRecord]) -> dict[str, Any]:
    root = urls.root
    links = [
        link("self", root),
        link("root", root),
        link("conformance", root + "/conformance"),
        link("data", root + "/collections"),
        link("search", root + "/search", GEOJSON, method="GET"),
        link("search", root + "/search", GEOJSON, method="POST"),
        link("service-doc", urls.base + "/docs", "text/html", title="The HTTP API, interactively"),
    ]
    links += [link("child", urls.collection(p.id), title=p.display_name) for p in projects]
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": "geopera",
        "title": "Geopera kernel",
        "description": "The items of the projects this token can read, one collection per project.",
        "conformsTo": list(CONFORMANCE),
        "links": links,
    }


def collection(urls: StacUrls, project: ProjectRecord, extent: ProjectExtent) -> dict[str, Any]:
    first, last = extent.first_datetime, extent.last_datetime
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": project.id,
        "title": project.display_name,
        "description": f"The items of project {project.display_name} ({project.id}).",
        "license": "proprietary",
        "extent": {
            # An empty project covers nothing yet: the whole world and an open interval.
            "spatial": {"bbox": [list(extent.bbox or (-180.0, -90.0, 180.0, 90.0))]},
            "temporal": {"interval": [[rfc3339(first) if first else None, rfc3339(last) if last else None]]},
        },
        "links": [
            link("self", urls.collection(project.id)),
            link("root", urls.root),
            link("parent", urls.root),
            link("items", urls.items(project.id), GEOJSON),
        ],
    }


def collections(urls: StacUrls, documents: list[dict[str, Any]]) -> dict[str, Any]:
    href = urls.root + "/collections"
    return {"collections": documents, "links": [link("self", href), link("root", urls.root)]}


def item(urls: StacUrls, record: ItemRecord) -> dict[str, Any]:
    properties: dict[str, Any] = {
        **record.properties,
        "datetime": rfc3339(record.datetime),
        "title": record.name,
        "created": rfc3339(record.create_time),
        "geopera:collection": record.collection_id,
    }
    if record.job_id:
        properties["geopera:job_id"] = record.job_id
    assets = {
        asset.key: {
            "href": urls.asset(record.id, asset.key),
            "type": asset.media_type,
            "title": asset.title,
            "roles": list(asset.roles),
        }
        for asset in record.assets
    }
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": record.id,
        "collection": record.project_id,
        "geometry": record.geometry,
        "bbox": list(record.bbox),
        "properties": properties,
        "links": [
            link("self", urls.item(record.project_id, record.id), GEOJSON),
            link("parent", urls.collection(record.project_id)),
            link("collection", urls.collection(record.project_id)),
            link("root", urls.root),
        ],
        "assets": assets,
    }


def item_collection(urls: StacUrls, records: list[ItemRecord], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [item(urls, record) for record in records],
        "links": [*links, link("root", urls.root)],
        "numberReturned": len(records),
    }


def next_link(href: str, token: str, post_body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The link to the next page: GET `href` (its query carries the token), or
    for a POST search the same request body with the token added."""
    if post_body is None:
        return link("next", href, GEOJSON, method="GET")
    return link("next", href, GEOJSON, method="POST", body={**post_body, "token": token})
