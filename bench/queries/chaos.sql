-- What `make chaos` reads straight from the database, not through the server
-- under test, to check its invariants (bench/chaos.py). Loaded with the
-- server's loader (server.store.queries.load_query_dir); tests prepare these too.

-- name: open_jobs
-- How many jobs are not yet in one of the given (terminal) statuses.
SELECT count(*) FROM jobs WHERE status <> ALL(%(terminal)s::text[]);

-- name: all_jobs
-- Every job with what the invariants compare: outputs, sources, credits and attempts.
SELECT id, status, output_item_ids, source_item_ids, credits_reserved, credits_charged, attempt FROM jobs;

-- name: failed_job_errors
-- The error of every failed job.
SELECT error FROM jobs WHERE status = 'FAILED';

-- name: credit_balances
-- Every project's balance.
SELECT project_id, available, held, granted_total, captured_total FROM credit_accounts;

-- name: ledger_sums
-- A project's ledger summed by kind (grant, reserve, capture, release, waive).
SELECT kind, sum(amount) FROM credit_ledger WHERE project_id = %(project_id)s GROUP BY kind;

-- name: ledger_per_job
-- Per job: credits reserved on the job row, and its ledger's reserve, capture and release sums and reserve count.
SELECT j.id, j.status, j.credits_reserved,
       coalesce(sum(l.amount) FILTER (WHERE l.kind = 'reserve'), 0),
       coalesce(sum(l.amount) FILTER (WHERE l.kind = 'capture'), 0),
       coalesce(sum(l.amount) FILTER (WHERE l.kind = 'release'), 0),
       count(*) FILTER (WHERE l.kind = 'reserve')
FROM jobs j LEFT JOIN credit_ledger l ON l.job_id = j.id
GROUP BY j.id;

-- name: job_items
-- Ids of the items a job produced.
SELECT id FROM items WHERE job_id = %(job_id)s;

-- name: item_provenance
-- The provenance edges of one output item.
SELECT relation, job_id, source_item_id FROM provenance_edges WHERE output_item_id = %(item_id)s;

-- name: item_asset_files
-- Where one item's asset bytes are, with their size and sha256.
SELECT key, storage_key, size_bytes, sha256 FROM assets WHERE item_id = %(item_id)s;

-- name: duplicate_item_names
-- Items sharing a project, collection and name (there must be none).
SELECT project_id, collection_id, name, count(*) FROM items GROUP BY 1, 2, 3 HAVING count(*) > 1;

-- name: referenced_storage_keys
-- Every storage key an asset or an artifact names.
SELECT storage_key FROM assets
UNION ALL
SELECT storage_key FROM artifacts;
