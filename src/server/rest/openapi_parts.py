"""What the OpenAPI paths of the HTTP projection are built from (openapi.py, stac_openapi.py,
tiles_openapi.py): parameters and the error answer, written once."""

from __future__ import annotations

from typing import Any

ERROR_CONTENT: dict[str, Any] = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def error_response(description: str = "an error") -> dict[str, Any]:
    """An answer with the Error body (components/schemas/Error)."""
    return {"description": description, **ERROR_CONTENT}


def query_param(name: str, description: str | None = None, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """An optional query parameter (a string unless `schema` says otherwise)."""
    param = {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"}}
    if description is not None:
        param["description"] = description
    return param


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
