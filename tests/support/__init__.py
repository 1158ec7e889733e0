"""Test support: real PostgreSQL databases and real server processes."""
