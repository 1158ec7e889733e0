-- Bookkeeping of the numbered migrations (the migrations themselves are the
-- files in ../migrations, applied by server.store.database.migrate).

-- name: lock_migrations
-- Waits for the session advisory lock that lets one replica at a time migrate.
SELECT pg_advisory_lock(%(lock_id)s);

-- name: unlock_migrations
-- Releases the migration lock taken by lock_migrations.
SELECT pg_advisory_unlock(%(lock_id)s);

-- name: create_schema_migrations
-- Creates the table of applied migrations unless it exists (a new database).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_time timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- Versions of the migrations applied so far.
SELECT version FROM schema_migrations;

-- name: record_migration
-- Records a migration as applied, in the transaction that applied it.
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);
