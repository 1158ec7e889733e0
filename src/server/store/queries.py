"""Named SQL queries loaded once from the `.sql` files beside this module.

A file holds blocks that start with `-- name: <query_name>`; the text up to the
next such line is the query. Parameters use psycopg's `%(name)s` style.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERY_DIR = Path(__file__).parent / "queries"
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries:
    """Attribute access to named queries: `Q.get_item`."""

    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r} in {QUERY_DIR}") from None

    def names(self) -> list[str]:
        return sorted(self._queries)


def parse_queries(text: str, source: str) -> dict[str, str]:
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {source}")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def load_queries() -> Queries:
    merged: dict[str, str] = {}
    for path in sorted(QUERY_DIR.glob("*.sql")):
        for name, sql in parse_queries(path.read_text(), path.name).items():
            if name in merged:
                raise ValueError(f"query {name!r} defined twice ({path.name})")
            merged[name] = sql
    return Queries(merged)


Q = load_queries()
