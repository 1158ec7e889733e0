-- name: upsert_job_type
-- Creates or changes a job type. The server's registration (builtin) always
-- applies; a worker's declaration (owner_token_id set) changes an existing
-- type only when it is not built in and owned by this credential, by nobody
-- or by a revoked credential. The row stays locked until commit either way.
INSERT INTO job_types (id, description, input_schema, cost_flat, cost_per_km2, cost_per_asset, cost_minimum, builtin,
                       owner_token_id)
VALUES (%(id)s, %(description)s, %(input_schema)s, %(cost_flat)s, %(cost_per_km2)s, %(cost_per_asset)s,
        %(cost_minimum)s, %(builtin)s, %(owner_token_id)s)
ON CONFLICT (id) DO UPDATE SET
    description = excluded.description, input_schema = excluded.input_schema,
    cost_flat = excluded.cost_flat, cost_per_km2 = excluded.cost_per_km2,
    cost_per_asset = excluded.cost_per_asset, cost_minimum = excluded.cost_minimum,
    builtin = job_types.builtin OR excluded.builtin, owner_token_id = excluded.owner_token_id, update_time = now()
WHERE ((job_types.description, job_types.input_schema, job_types.cost_flat, job_types.cost_per_km2,
        job_types.cost_per_asset, job_types.cost_minimum)
       IS DISTINCT FROM (excluded.description, excluded.input_schema, excluded.cost_flat, excluded.cost_per_km2,
        excluded.cost_per_asset, excluded.cost_minimum)
       OR (job_types.owner_token_id IS NULL AND NOT job_types.builtin AND excluded.owner_token_id IS NOT NULL))
  AND (excluded.builtin
       OR (NOT job_types.builtin
           AND (job_types.owner_token_id IS NULL OR job_types.owner_token_id = excluded.owner_token_id
                OR NOT EXISTS (SELECT 1 FROM tokens o
                               WHERE o.id = job_types.owner_token_id AND o.revoke_time IS NULL))));

-- name: list_job_types
-- A connected worker is one that heartbeated within the lease (`live_seconds`).
SELECT t.id, t.description, t.input_schema, t.cost_flat, t.cost_per_km2, t.cost_per_asset, t.cost_minimum,
       t.builtin, t.owner_token_id,
       (SELECT count(*) FROM workers w
        WHERE w.connected AND w.last_heartbeat_time > now() - make_interval(secs => %(live_seconds)s)
          AND t.id = ANY(w.job_type_ids)) AS connected_workers
FROM job_types t
WHERE %(id)s::text IS NULL OR t.id = %(id)s::text
ORDER BY t.id;

-- name: insert_job
-- Creates a job as PENDING at sequence 1 (`resubmitted_from` and `batch_id` may be NULL).
INSERT INTO jobs (id, project_id, job_type_id, status, input_params, target_collection_id, source_item_ids,
                  credits_reserved, created_by, message, max_attempts, sequence, resubmitted_from, batch_id,
                  traceparent)
VALUES (%(id)s, %(project_id)s, %(job_type_id)s, 'PENDING', %(input_params)s, %(target_collection_id)s,
        %(source_item_ids)s, %(credits_reserved)s, %(created_by)s, %(message)s, %(max_attempts)s, 1,
        %(resubmitted_from)s, %(batch_id)s, %(traceparent)s)
RETURNING *;

-- name: insert_batch_jobs
-- Creates a batch's jobs as PENDING at sequence 1 in one statement (arrays in
-- step, one element per job; source item ids as a JSON array per job).
INSERT INTO jobs (id, project_id, job_type_id, status, input_params, target_collection_id, source_item_ids,
                  credits_reserved, created_by, message, max_attempts, sequence, batch_id, traceparent)
SELECT g.id, %(project_id)s, g.job_type_id, 'PENDING', g.input_params, g.target_collection_id,
       ARRAY(SELECT jsonb_array_elements_text(g.source_item_ids)), g.credits_reserved, %(created_by)s, g.message,
       %(max_attempts)s, 1, %(batch_id)s, %(traceparent)s
FROM unnest(%(ids)s::text[], %(job_type_ids)s::text[], %(input_params)s::jsonb[], %(target_collection_ids)s::text[],
            %(source_item_ids)s::jsonb[], %(credits_reserved)s::bigint[], %(messages)s::text[])
         WITH ORDINALITY AS g (id, job_type_id, input_params, target_collection_id, source_item_ids,
                               credits_reserved, message, position)
ORDER BY g.position
RETURNING *;

-- name: dispatch_batch_jobs
-- Queues several PENDING jobs (one message each, arrays in step) and wakes
-- every replica's dispatcher once per job type (at commit).
WITH queued AS (
    UPDATE jobs SET status = 'DISPATCHED', available_time = now(), dispatch_time = coalesce(dispatch_time, now()),
        message = g.message, update_time = now(), sequence = sequence + 1
    FROM unnest(%(ids)s::text[], %(messages)s::text[]) AS g (id, message)
    WHERE jobs.id = g.id AND jobs.status = 'PENDING'
    RETURNING jobs.*
), woken AS (
    SELECT pg_notify('geopera_dispatch', job_type_id) FROM (SELECT DISTINCT job_type_id FROM queued) t
)
SELECT queued.*, (SELECT count(*) FROM woken) AS notified FROM queued;

-- name: get_jobs
-- Several jobs by id (those that exist).
SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]);

-- name: batch_jobs
-- Every job of a batch, oldest first.
SELECT * FROM jobs WHERE batch_id = %(batch_id)s ORDER BY create_time, id;

-- name: unfinished_project_jobs
-- A project's jobs that have not ended, with optional filters, oldest first,
-- at most `limit` (WatchJobs' set by project).
SELECT * FROM jobs
WHERE project_id = %(project_id)s AND status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(job_type_id)s::text IS NULL OR job_type_id = %(job_type_id)s::text)
ORDER BY create_time, id
LIMIT %(limit)s;

-- name: get_job
-- One job.
SELECT * FROM jobs WHERE id = %(id)s;

-- name: lock_job
-- One job, locked until commit.
SELECT * FROM jobs WHERE id = %(id)s FOR UPDATE;

-- name: list_jobs
-- One page of a project's jobs, newest first, with optional filters.
SELECT * FROM jobs
WHERE project_id = %(project_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(job_type_id)s::text IS NULL OR job_type_id = %(job_type_id)s::text)
  AND (%(create_start)s::timestamptz IS NULL OR create_time >= %(create_start)s::timestamptz)
  AND (%(create_end)s::timestamptz IS NULL OR create_time < %(create_end)s::timestamptz)
  AND (%(before_time)s::timestamptz IS NULL
       OR (create_time, id) < (%(before_time)s::timestamptz, %(before_id)s::text))
ORDER BY create_time DESC, id DESC
LIMIT %(limit)s;

-- name: dispatch_job
-- Queues the job and wakes every replica's dispatcher (at commit).
WITH queued AS (
    UPDATE jobs SET status = 'DISPATCHED', available_time = now(), dispatch_time = coalesce(dispatch_time, now()),
        message = %(message)s, update_time = now(), sequence = sequence + 1
    WHERE id = %(id)s AND status = 'PENDING'
    RETURNING *
)
SELECT queued.*, pg_notify('geopera_dispatch', queued.job_type_id) AS notified FROM queued;

-- name: claim_jobs
-- Claims up to the worker's free capacity among queued jobs of its types
-- (and of its credential's projects, when it is limited to some), oldest
-- first; nothing for a session that a reconnect has superseded. SKIP LOCKED
-- lets every replica's dispatcher claim at once.
WITH free AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM workers w WHERE w.id = %(worker_id)s AND w.session_id = %(session_id)s)
                THEN greatest(%(capacity)s - count(*), 0) ELSE 0 END AS slots
    FROM jobs
    WHERE worker_id = %(worker_id)s AND status IN ('DISPATCHED', 'RUNNING')
), picked AS (
    SELECT id FROM jobs
    WHERE status = 'DISPATCHED' AND worker_id IS NULL AND job_type_id = ANY(%(job_type_ids)s)
      AND (%(project_ids)s::text[] IS NULL OR project_id = ANY(%(project_ids)s::text[]))
      AND available_time <= now()
    ORDER BY available_time, id
    LIMIT (SELECT slots FROM free)
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET worker_id = %(worker_id)s, attempt = j.attempt + 1,
    lease_expire_time = now() + make_interval(secs => %(lease_seconds)s), update_time = now(),
    sequence = j.sequence + 1, message = 'assigned to worker ' || %(worker_id)s
FROM picked WHERE j.id = picked.id
RETURNING j.*;

-- name: active_jobs_by_worker
-- How many dispatched or running jobs each of the given workers holds.
SELECT worker_id, count(*) AS n FROM jobs
WHERE worker_id = ANY(%(worker_ids)s) AND status IN ('DISPATCHED', 'RUNNING')
GROUP BY worker_id;

-- name: insert_job_tokens
-- The tokens of the jobs one claim assigned to a worker (arrays in step).
INSERT INTO job_tokens (token_hash, job_id, attempt, worker_id)
SELECT token_hash, job_id, attempt, %(worker_id)s
FROM unnest(%(token_hashes)s::bytea[], %(job_ids)s::text[], %(attempts)s::integer[]) AS t (token_hash, job_id, attempt);

-- name: job_token_principal
-- The job and attempt a job-scoped worker token was issued for, with the job's current state.
SELECT t.job_id, t.attempt, t.worker_id, j.project_id, j.source_item_ids, j.status, j.attempt AS job_attempt,
       j.worker_id AS job_worker_id
FROM job_tokens t JOIN jobs j ON j.id = t.job_id
WHERE t.token_hash = %(token_hash)s;

-- name: report_progress
-- A progress report of the token's live attempt (the first one also marks the
-- job RUNNING, event `running`; later ones `progress`), checked, applied,
-- recorded and announced in one statement under the job's row lock (one round
-- trip, no explicit transaction). The event and its NOTIFY are those
-- insert_events writes: the snapshot is built here from the updated row and
-- is byte-identical to event_snapshot() in server/domain/jobs/records.py (timestamps
-- as Python's isoformat in the session time zone, progress as a JSON float,
-- worker_id '' when NULL, no input_params). No row when that attempt is over
-- (the caller asks why).
WITH live AS (
    SELECT id, status FROM jobs
    WHERE id = %(id)s AND attempt = %(attempt)s AND worker_id = %(worker_id)s
      AND status IN ('DISPATCHED', 'RUNNING')
    FOR UPDATE
), updated AS (
    UPDATE jobs j SET status = 'RUNNING',
        start_time = CASE WHEN live.status = 'DISPATCHED' THEN now() ELSE j.start_time END,
        progress = %(progress)s, message = %(message)s, update_time = now(), sequence = j.sequence + 1,
        lease_expire_time = greatest(j.lease_expire_time, now() + make_interval(secs => %(lease_seconds)s))
    FROM live
    WHERE j.id = live.id
    RETURNING j.*, live.status = 'DISPATCHED' AS started
), given AS (
    SELECT u.id AS job_id, u.sequence, CASE WHEN u.started THEN 'running' ELSE 'progress' END AS event_type,
           u.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AS terminal, coalesce(u.worker_id, '') AS worker_id,
           jsonb_build_object(
               'id', u.id, 'project_id', u.project_id, 'job_type_id', u.job_type_id, 'status', u.status,
               'target_collection_id', u.target_collection_id, 'source_item_ids', to_jsonb(u.source_item_ids),
               'progress', CASE WHEN u.progress = 0 THEN '0.0'::jsonb WHEN u.progress = 1 THEN '1.0'::jsonb
                                ELSE to_jsonb(u.progress) END,
               'attempt', u.attempt, 'max_attempts', u.max_attempts, 'worker_id', coalesce(u.worker_id, ''),
               'create_time', t.create_time, 'dispatch_time', t.dispatch_time, 'start_time', t.start_time,
               'end_time', t.end_time, 'update_time', t.update_time,
               'credits_reserved', u.credits_reserved, 'credits_charged', u.credits_charged, 'error', nullif(u.error, '{}'::jsonb),
               'message', u.message, 'cancel_requested', u.cancel_requested,
               'output_item_ids', to_jsonb(u.output_item_ids), 'sequence', u.sequence,
               'resubmitted_from', coalesce(u.resubmitted_from, ''), 'batch_id', coalesce(u.batch_id, ''),
               'output_artifacts', u.output_artifacts
           ) AS snapshot
    FROM updated u,
         LATERAL (
             -- datetime.isoformat(): microseconds only when nonzero, offset as +HH:MM.
             SELECT max(f) FILTER (WHERE k = 1) AS create_time, max(f) FILTER (WHERE k = 2) AS dispatch_time,
                    max(f) FILTER (WHERE k = 3) AS start_time, max(f) FILTER (WHERE k = 4) AS end_time,
                    max(f) FILTER (WHERE k = 5) AS update_time
             FROM (
                 SELECT k, to_char(v, 'YYYY-MM-DD"T"HH24:MI:SS')
                           || CASE WHEN extract(microseconds FROM v) %% 1000000 = 0 THEN '' ELSE to_char(v, '.US') END
                           || to_char(v, 'TZH:TZM') AS f
                 FROM unnest(ARRAY[u.create_time, u.dispatch_time, u.start_time, u.end_time, u.update_time])
                          WITH ORDINALITY AS x (v, k)
             ) formatted
         ) t
), event AS (
    INSERT INTO job_events (job_id, sequence, event_type, snapshot)
    SELECT job_id, sequence, event_type, snapshot FROM given
    RETURNING job_id, sequence, event_type, event_time, snapshot
), payload AS (
    SELECT jsonb_build_object('j', event.job_id, 's', event.sequence, 'e', event.event_type, 'at', event.event_time,
                              't', given.terminal, 'w', given.worker_id) AS head,
           event.snapshot
    FROM event JOIN given USING (job_id, sequence)
)
SELECT pg_notify('geopera_job_events',
                 CASE WHEN octet_length((head || jsonb_build_object('snap', snapshot))::text) < 7900
                      THEN (head || jsonb_build_object('snap', snapshot))::text
                      ELSE head::text END) AS notified
FROM payload;

-- name: store_job_artifacts
-- Records the artifacts a job stored, before its terminal transition.
UPDATE jobs SET output_artifacts = %(output_artifacts)s WHERE id = %(id)s;

-- name: requeue_job
-- Back to the queue for another attempt (lease expired, retryable failure,
-- or handed back); `available_time` carries the backoff.
WITH queued AS (
    UPDATE jobs SET status = 'DISPATCHED', worker_id = NULL, lease_expire_time = NULL, progress = 0,
        available_time = now() + make_interval(secs => %(backoff_seconds)s), start_time = NULL,
        attempt = attempt - %(refund_attempt)s, message = %(message)s, update_time = now(),
        sequence = sequence + 1
    WHERE id = %(id)s
    RETURNING *
)
SELECT queued.*, pg_notify('geopera_dispatch', queued.job_type_id) AS notified FROM queued;

-- name: finish_job
-- Moves a job not yet finished to its terminal status with its outcome; no row when it already was.
UPDATE jobs SET status = %(status)s, end_time = now(), update_time = now(), sequence = sequence + 1,
    lease_expire_time = NULL, error = %(error)s, message = %(message)s,
    credits_charged = %(credits_charged)s, output_item_ids = %(output_item_ids)s,
    progress = CASE WHEN %(status)s = 'SUCCEEDED' THEN 1 ELSE progress END,
    cancel_requested = cancel_requested OR %(status)s = 'CANCELLED'
WHERE id = %(id)s AND status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
RETURNING *;

-- name: store_outputs_response
-- Stores the response to a job's outputs report, for replay when the worker retries.
UPDATE jobs SET outputs_response = %(response)s WHERE id = %(id)s;

-- name: expired_leases
-- Locks up to 100 claimed jobs whose worker lease ran out, oldest first, skipping locked ones.
SELECT id FROM jobs
WHERE status IN ('DISPATCHED', 'RUNNING') AND worker_id IS NOT NULL AND lease_expire_time < now()
ORDER BY lease_expire_time
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: renew_leases
-- Extends the worker's lease on those of the given jobs it still holds.
UPDATE jobs SET lease_expire_time = now() + make_interval(secs => %(lease_seconds)s)
WHERE worker_id = %(worker_id)s AND id = ANY(%(job_ids)s) AND status IN ('DISPATCHED', 'RUNNING');

-- name: insert_events
-- Writes events (one per array position, e.g. a job's `created` and
-- `dispatched`, or the `assigned` of each job a claim took) and announces each
-- on geopera_job_events in that order (delivered at commit, never on
-- rollback): one statement for all. The payload carries the snapshot when it
-- fits NOTIFY's 8000-byte limit, so watchers rarely need to query. The
-- webhook messages of the events are enqueued by job_events' trigger
-- (migration 0015), in this statement.
WITH given AS (
    SELECT * FROM unnest(%(job_ids)s::text[], %(sequences)s::bigint[], %(event_types)s::text[],
                         %(snapshots)s::jsonb[], %(terminals)s::boolean[], %(worker_ids)s::text[])
        WITH ORDINALITY AS g (job_id, sequence, event_type, snapshot, terminal, worker_id, position)
), event AS (
    INSERT INTO job_events (job_id, sequence, event_type, snapshot)
    SELECT job_id, sequence, event_type, snapshot FROM given ORDER BY position
    RETURNING job_id, sequence, event_type, event_time, snapshot
), payload AS (
    SELECT given.position, event.event_time,
           jsonb_build_object('j', event.job_id, 's', event.sequence, 'e', event.event_type, 'at', event.event_time,
                              't', given.terminal, 'w', given.worker_id) AS head,
           event.snapshot
    FROM event JOIN given USING (job_id, sequence)
)
SELECT event_time,
       pg_notify('geopera_job_events',
                 CASE WHEN octet_length((head || jsonb_build_object('snap', snapshot))::text) < 7900
                      THEN (head || jsonb_build_object('snap', snapshot))::text
                      ELSE head::text END) AS notified
FROM payload
ORDER BY position;

-- name: events_after
-- A job's events after a sequence, with the job's input_params (snapshots leave them out).
SELECT e.sequence, e.event_type, e.event_time, e.snapshot, j.input_params
FROM job_events e JOIN jobs j ON j.id = e.job_id
WHERE e.job_id = %(job_id)s AND e.sequence > %(after)s
ORDER BY e.sequence
LIMIT 1000;

-- name: events_after_many
-- The events of several jobs, each after its own sequence (arrays in step),
-- with each job's input_params; in (job, sequence) order, at most 5000.
SELECT e.job_id, e.sequence, e.event_type, e.event_time, e.snapshot, j.input_params
FROM unnest(%(job_ids)s::text[], %(afters)s::bigint[]) AS g (job_id, after)
JOIN job_events e ON e.job_id = g.job_id AND e.sequence > g.after
JOIN jobs j ON j.id = e.job_id
ORDER BY e.job_id, e.sequence
LIMIT 5000;

-- name: insert_worker
-- A new session of a worker (new or resumed id): the row now belongs to it.
INSERT INTO workers (id, token_id, name, job_type_ids, capacity, session_id)
VALUES (%(id)s, %(token_id)s, %(name)s, %(job_type_ids)s, %(capacity)s, %(session_id)s)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, job_type_ids = excluded.job_type_ids,
    capacity = excluded.capacity, connected = true, last_heartbeat_time = now(), session_id = excluded.session_id
WHERE workers.token_id = excluded.token_id
RETURNING *;

-- name: worker_heartbeat
-- No row when a newer session of the worker took over.
UPDATE workers SET last_heartbeat_time = now(), connected = true
WHERE id = %(id)s AND session_id = %(session_id)s
RETURNING id;

-- name: worker_disconnected
-- Only the session that owns the row marks it disconnected.
UPDATE workers SET connected = false WHERE id = %(id)s AND session_id = %(session_id)s;

-- name: list_workers
-- Connected means: its session is open and it heartbeated within the lease
-- (`live_seconds`), so the workers of a server that died drop out.
SELECT w.*, (SELECT count(*) FROM jobs j WHERE j.worker_id = w.id AND j.status IN ('DISPATCHED', 'RUNNING'))
       AS active_jobs,
       w.connected AND w.last_heartbeat_time > now() - make_interval(secs => %(live_seconds)s) AS live
FROM workers w
WHERE %(include_disconnected)s
   OR (w.connected AND w.last_heartbeat_time > now() - make_interval(secs => %(live_seconds)s))
ORDER BY w.id;

-- name: notify
-- Announces `payload` on `channel` (see domain/jobs/notices.py), delivered at commit and never on rollback.
SELECT pg_notify(%(channel)s, %(payload)s);
