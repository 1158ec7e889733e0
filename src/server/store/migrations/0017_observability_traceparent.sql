-- The W3C traceparent of the call that created a job: its assignment carries it,
-- so the worker's job span joins that call's trace ('' when tracing is off).
ALTER TABLE jobs ADD COLUMN traceparent text NOT NULL DEFAULT '';

-- /metrics reads the open jobs by type and status (metrics_open_jobs) at scrape time.
CREATE INDEX jobs_open_idx ON jobs (job_type_id, status, create_time)
    WHERE status IN ('PENDING', 'DISPATCHED', 'RUNNING');
