-- Job log records written by workers (WorkerService.WriteJobLogs), numbered per
-- job, read by processing.jobs.logs and WatchJob(include_logs). `job_log_totals`
-- holds each job's running count and bytes so the caps are checked without
-- scanning the records (appends run under the job's row lock).
CREATE TABLE job_log_totals (
    job_id          text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    entries         integer NOT NULL DEFAULT 0,
    size_bytes      bigint NOT NULL DEFAULT 0,
    truncated       boolean NOT NULL DEFAULT false,
    dropped_entries bigint NOT NULL DEFAULT 0
);

CREATE TABLE job_logs (
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sequence   bigint NOT NULL,
    attempt    integer NOT NULL,
    log_time   timestamptz NOT NULL,
    level      smallint NOT NULL,
    message    text NOT NULL,
    fields     jsonb NOT NULL DEFAULT '{}'::jsonb,
    truncated  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, sequence)
);
