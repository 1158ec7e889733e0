"""The STAC API's routes and `/healthz`, `/readyz`, `/metrics` in the OpenAPI document
(`/v1/openapi.json`, shown at `/docs`): their parameters and answers, so that
`/docs` lists them and the schemathesis fuzz sends them hostile requests."""

from __future__ import annotations

from typing import Any

from geopera_kernel.server.rest.openapi_parts import error_response, path_param, query_param
from geopera_kernel.server.rest.stac_items import GEOJSON, JSON, STAC_ROOT
from geopera_kernel.server.rest.stac_search import DEFAULT_LIMIT, MAX_LIMIT

_OBJECT = {"type": "object"}
_FEATURE_COLLECTION = {
    "type": "object",
    "required": ["type", "features", "links"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"type": "object"}},
        "links": {"type": "array", "items": {"type": "object"}},
        "numberReturned": {"type": "integer"},
    },
}


_LIMIT = query_param("limit", f"items per page, {DEFAULT_LIMIT} by default; above {MAX_LIMIT}, {MAX_LIMIT}",
                {"type": "integer", "minimum": 1})  # fmt: skip
_BBOX = query_param("bbox", "west,south,east,north in degrees (or 6 numbers with heights)")
_DATETIME = query_param("datetime", "an RFC 3339 instant, or an interval start/end with .. for an open end")
_TOKEN = query_param("token", "the page token of a `next` link")


def _get(operation_id: str, summary: str, media_type: str, schema: dict[str, Any], *params: dict[str, Any]) -> Any:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["STAC API"],
            "parameters": list(params),
            "responses": {"200": {"description": summary, "content": {media_type: {"schema": schema}}},
                          "default": error_response()},
        }
    }  # fmt: skip


def openapi_paths() -> dict[str, Any]:
    root = STAC_ROOT
    search_body = {
        "type": "object",
        "properties": {
            "collections": {"type": "array", "items": {"type": "string"}},
            "ids": {"type": "array", "items": {"type": "string"}},
            "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6},
            "intersects": {"type": "object", "description": "a GeoJSON geometry"},
            "datetime": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1},
            "token": {"type": "string"},
        },
    }
    search_get = _get(
        "stac_search_get", "Search items (STAC API item search).", GEOJSON, _FEATURE_COLLECTION,
        query_param("collections", "comma-separated collection (project) ids; all the caller reads when absent"),
        query_param("ids", "comma-separated item ids"), _BBOX, _DATETIME,
        query_param("intersects", "a GeoJSON geometry, as JSON text"), _LIMIT, _TOKEN,
    )  # fmt: skip
    search_get["post"] = {
        "operationId": "stac_search_post",
        "summary": "Search items with a JSON body (STAC API item search).",
        "tags": ["STAC API"],
        "requestBody": {"required": False, "content": {JSON: {"schema": search_body}}},
        "responses": {"200": {"description": "a page of items", "content": {GEOJSON: {"schema": _FEATURE_COLLECTION}}},
                      "default": error_response()},
    }  # fmt: skip
    return {
        root: _get("stac_landing_page", "The STAC API landing page (a Catalog).", JSON, _OBJECT),
        root + "/conformance": _get("stac_conformance", "The conformance classes.", JSON, _OBJECT),
        root + "/collections": _get("stac_collections", "A collection per project the caller reads.", JSON, _OBJECT),
        root + "/collections/{collection_id}": _get(
            "stac_collection", "One collection (project).", JSON, _OBJECT, path_param("collection_id")
        ),
        root + "/collections/{collection_id}/items": _get(
            "stac_collection_items",
            "A collection's items, a page at a time.",
            GEOJSON,
            _FEATURE_COLLECTION,
            path_param("collection_id"),
            _BBOX,
            _DATETIME,
            _LIMIT,
            _TOKEN,
        ),
        root + "/collections/{collection_id}/items/{item_id}": _get(
            "stac_item",
            "One item (a STAC Item; asset hrefs are signed URLs).",
            GEOJSON,
            _OBJECT,
            path_param("collection_id"),
            path_param("item_id"),
        ),
        root + "/search": search_get,
    }


def health_paths() -> dict[str, Any]:
    def probe(operation_id: str, summary: str, **more: Any) -> dict[str, Any]:
        ok = {"description": summary, "content": {JSON: {"schema": _OBJECT}}}
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["health"],
                "security": [{}],
                "responses": {"200": ok, **more},
            }
        }

    return {
        "/healthz": probe("healthz", "Liveness: the process answers."),
        "/readyz": probe(
            "readyz",
            "Readiness: the database answers and is fully migrated (503 with the reason).",
            **{"503": error_response("not ready, with the reason")},
        ),
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of the replica that answers (text format). Who may read them is "
                "GEOPERA_METRICS: open (no token, the default), admin (a token with the admin scope), off (404).",
                "tags": ["health"],
                "security": [{}, {"bearer": []}],
                "responses": {
                    "200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": error_response("GEOPERA_METRICS=admin and no valid token"),
                    "403": error_response("GEOPERA_METRICS=admin and the token lacks the admin scope"),
                },
            }
        },
    }
