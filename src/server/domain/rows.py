"""Query rows: the row a project's query must find, and records built from a row's columns."""

from __future__ import annotations

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


def from_columns(cls: type[T], row: dict[str, Any], **computed: Any) -> T:
    """``cls`` with each field taken from the row's column of the same name,
    except the fields given in ``computed`` (converted or derived values)."""
    # cls is a dataclass; mypy cannot say so of a bare type[T].
    values = {f.name: row[f.name] for f in fields(cls) if f.name not in computed}  # type: ignore[arg-type]
    return cls(**values, **computed)
