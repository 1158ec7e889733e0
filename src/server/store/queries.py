"""Named SQL queries loaded once from the `.sql` files beside this module.

A file holds blocks that start with `-- name: <query_name>`, then a description
(the `--` comment lines right after it: what the query does, one line if that
says it), then the query, up to the next name line. Parameters use psycopg's
`%(name)s` style. Every file in the folder is loaded, so a new file needs no code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

QUERY_DIR = Path(__file__).parent / "queries"
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str  # empty when the file gives none (a test refuses that)
    sql: str
    source: str  # the file it came from


class Queries:
    """Attribute access to named queries' SQL: `Q.get_item`."""

    def __init__(self, queries: dict[str, NamedQuery]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name].sql
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r} in {QUERY_DIR}") from None

    def names(self) -> list[str]:
        return sorted(self._queries)

    def all(self) -> list[NamedQuery]:
        """Every query, ordered by name."""
        return [self._queries[name] for name in self.names()]


def parse_queries(text: str, source: str) -> dict[str, NamedQuery]:
    parts = _NAME_LINE.split(text)
    queries: dict[str, NamedQuery] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {source}")
        lines = body.strip().splitlines()
        description: list[str] = []
        while lines and lines[0].startswith("--"):
            description.append(lines.pop(0).removeprefix("--").strip())
        sql = "\n".join(lines).strip().rstrip(";")
        queries[name] = NamedQuery(name, " ".join(filter(None, description)), sql, source)
    return queries


@cache
def load_query_dir(directory: Path) -> Queries:
    """Every query of the `.sql` files in `directory` (the benchmarks keep theirs in bench/queries)."""
    merged: dict[str, NamedQuery] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, query in parse_queries(path.read_text(), path.name).items():
            if name in merged:
                raise ValueError(f"query {name!r} defined twice ({path.name})")
            merged[name] = query
    return Queries(merged)


def load_queries() -> Queries:
    """The server's queries."""
    return load_query_dir(QUERY_DIR)


Q = load_queries()
