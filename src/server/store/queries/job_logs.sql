-- name: get_job_log_totals
-- A job's log totals (no row before its first record). Read under the job's row
-- lock (attempts.py `_current_attempt`), which serialises a job's appends.
SELECT entries, size_bytes, truncated, dropped_entries FROM job_log_totals WHERE job_id = %(job_id)s;

-- name: upsert_job_log_totals
-- Stores a job's log totals after an append.
INSERT INTO job_log_totals (job_id, entries, size_bytes, truncated, dropped_entries)
VALUES (%(job_id)s, %(entries)s, %(size_bytes)s, %(truncated)s, %(dropped_entries)s)
ON CONFLICT (job_id) DO UPDATE SET
    entries = excluded.entries, size_bytes = excluded.size_bytes, truncated = excluded.truncated,
    dropped_entries = excluded.dropped_entries;

-- name: insert_job_logs
-- Appends a batch of a job's log records (parallel arrays, one element a record).
INSERT INTO job_logs (job_id, sequence, attempt, log_time, level, message, fields, truncated)
SELECT %(job_id)s, r.sequence, %(attempt)s, r.log_time, r.level, r.message, r.fields, r.truncated
FROM unnest(%(sequences)s::bigint[], %(log_times)s::timestamptz[], %(levels)s::smallint[], %(messages)s::text[],
            %(fields)s::jsonb[], %(truncated)s::boolean[])
     AS r(sequence, log_time, level, message, fields, truncated);

-- name: list_job_logs
-- A page of a job's log records of at least `min_level`, after `after_sequence`, oldest first.
SELECT sequence, attempt, log_time, level, message, fields, truncated
FROM job_logs
WHERE job_id = %(job_id)s AND sequence > %(after_sequence)s AND level >= %(min_level)s
ORDER BY sequence
LIMIT %(limit)s;
