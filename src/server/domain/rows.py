"""Query rows: the row a project's query must find, and records built from a row's columns."""

from __future__ import annotations

import functools
from dataclasses import fields
from typing import Any, TypeVar

import psycopg

from geopera_kernel.server.errors import not_found

T = TypeVar("T")


async def fetch_project_row(
    conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any], project_id: str
) -> dict[str, Any]:
    """The query's row about ``project_id``; no row means the project does not exist."""
    row: dict[str, Any] | None = await (await conn.execute(query, params)).fetchone()
    if row is None:
        raise not_found("PROJECT_NOT_FOUND", f"project {project_id!r} does not exist")
    return row


async def fetch_artifact_row(conn: psycopg.AsyncConnection[Any], query: str, artifact_id: str) -> dict[str, Any]:
    """The query's row about ``artifact_id``; no row means the artifact does not exist."""
    row: dict[str, Any] | None = await (await conn.execute(query, {"id": artifact_id})).fetchone()
    if row is None:
        raise not_found("ARTIFACT_NOT_FOUND", f"artifact {artifact_id!r} does not exist", artifact_id=artifact_id)
    return row


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    # Once per record class: rows are turned into records on every read of a page of items.
    return tuple(f.name for f in fields(cls))


def from_columns(cls: type[T], row: dict[str, Any], **computed: Any) -> T:
    """``cls`` (a dataclass) with each field taken from the row's column of the same name,
    except the fields given in ``computed`` (converted or derived values)."""
    record_class: type = cls  # a class is hashable; the TypeVar hides it from the cache's signature
    values = {name: row[name] for name in _field_names(record_class) if name not in computed}
    return cls(**values, **computed)
