-- What the benchmarks read of PostgreSQL's own activity (bench/server.py, bench/items_get.py).

-- name: database_backends
-- PIDs of the backends connected to one database, but this one.
SELECT pid FROM pg_stat_activity WHERE datname = %(dbname)s AND pid <> pg_backend_pid();

-- name: background_backends
-- PIDs of the cluster's background processes (WAL writer, checkpointer, ...).
SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend';

-- name: client_activity
-- What each client backend of one database (but this one) is doing: state, wait event, query start.
SELECT state, wait_event_type, wait_event, left(query, 100) FROM pg_stat_activity
WHERE datname = %(dbname)s AND pid <> pg_backend_pid() AND backend_type = 'client backend';

-- name: table_columns
-- A table's columns in order (bench/items_get.py copies rows column by column).
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = %(table)s
ORDER BY ordinal_position;

-- name: forget_item_renders
-- Empties the stored item encodings, so the next read of every item builds it as on its first read.
TRUNCATE item_renders;
