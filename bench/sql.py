"""The benchmarks' named SQL queries (bench/queries/*.sql), loaded as the server loads its own."""

from pathlib import Path

from geopera_kernel.server.store.queries import load_query_dir

QUERY_DIR = Path(__file__).parent / "queries"
BQ = load_query_dir(QUERY_DIR)
