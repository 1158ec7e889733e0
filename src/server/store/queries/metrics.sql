-- name: metrics_open_jobs
-- Jobs not yet ended by job type and status, with the age of the oldest (for /metrics; partial index jobs_open_idx).
SELECT job_type_id, status, count(*) AS jobs,
       extract(epoch FROM now() - min(create_time))::float8 AS oldest_age_seconds
FROM jobs
WHERE status IN ('PENDING', 'DISPATCHED', 'RUNNING')
GROUP BY job_type_id, status
ORDER BY job_type_id, status
LIMIT 1000;

-- name: metrics_stored_bytes
-- Bytes stored over every project: item assets, analytics artifacts, uploads waiting for items.create (for /metrics).
SELECT (SELECT coalesce(sum(size_bytes), 0) FROM assets)::bigint AS asset_bytes,
       (SELECT coalesce(sum(size_bytes), 0) FROM artifacts)::bigint AS artifact_bytes,
       (SELECT coalesce(sum(size_bytes), 0) FROM uploads
        WHERE consume_time IS NULL AND expire_time > now())::bigint AS upload_bytes;
