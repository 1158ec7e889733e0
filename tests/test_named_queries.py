"""Every named query (src/server/store/queries/*.sql, and the benchmarks' in
bench/queries/*.sql) says what it does and is valid against the migrated schema.
Queries are enumerated from the loader, so a new .sql file in either folder is
checked without touching this test."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

from bench.sql import QUERY_DIR as BENCH_QUERY_DIR
from geopera_kernel.server.store.queries import NamedQuery, load_queries, load_query_dir, parse_queries
from tests.support.db import DatabaseFactory

QUERIES = [*load_queries().all(), *load_query_dir(BENCH_QUERY_DIR).all()]
_PARAM = re.compile(r"%\((\w+)\)[sbt]")
# What PREPARE accepts; anything else (DDL) is run in a transaction that is rolled back.
_PREPARABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "MERGE")


def _numbered(sql: str) -> tuple[str, int]:
    """psycopg's `%(name)s` (`b`, `t`) placeholders as PostgreSQL's `$n` (one number per name)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return _PARAM.sub(number, sql).replace("%%", "%"), len(numbers)


@pytest.fixture(scope="module")
def conn(database_factory: DatabaseFactory) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_factory.create()) as connection:
        # EXPLAIN EXECUTE then plans for unknown parameter values, not for NULLs
        # the planner could fold away.
        connection.execute("SET plan_cache_mode = force_generic_plan")
        yield connection
        connection.rollback()


def test_queries_are_loaded() -> None:
    assert len(QUERIES) > 50
    assert {"get_item", "claim_jobs", "record_migration", "ledger_per_job"} <= {q.name for q in QUERIES}


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.source}:{q.name}")
def test_query_has_a_description(query: NamedQuery) -> None:
    assert query.description, f"{query.source}: add a `-- <what it does>` line under `-- name: {query.name}`"


def test_a_query_without_a_description_is_seen() -> None:
    parsed = parse_queries("-- name: a\n-- Reads one.\nSELECT 1;\n\n-- name: b\nSELECT 2;\n", "t.sql")
    assert (parsed["a"].description, parsed["a"].sql) == ("Reads one.", "SELECT 1")
    assert (parsed["b"].description, parsed["b"].sql) == ("", "SELECT 2")


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.source}:{q.name}")
def test_query_prepares_and_plans(conn: psycopg.Connection, query: NamedQuery) -> None:
    """PostgreSQL parses, analyses and plans the query on the migrated schema:
    unknown tables, columns, functions and parameter types fail here."""
    sql, count = _numbered(query.sql)
    with conn.transaction(force_rollback=True):
        if query.sql.split(None, 1)[0].upper() in _PREPARABLE:
            conn.execute(f"PREPARE named_query AS {sql}")
            nulls = ", ".join(["NULL"] * count)
            plan = conn.execute(f"EXPLAIN EXECUTE named_query{f'({nulls})' if count else ''}").fetchall()
            conn.execute("DEALLOCATE named_query")
            assert plan
        else:
            conn.execute(query.sql, dict.fromkeys(_PARAM.findall(query.sql)))
