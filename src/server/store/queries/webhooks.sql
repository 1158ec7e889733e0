-- name: insert_webhook
-- Creates a project's webhook.
INSERT INTO webhooks (id, project_id, url, event_types, secret)
VALUES (%(id)s, %(project_id)s, %(url)s, %(event_types)s, %(secret)s)
RETURNING *;

-- name: get_webhook
-- A webhook by id.
SELECT * FROM webhooks WHERE id = %(id)s;

-- name: list_webhooks
-- A project's webhooks, oldest first, after a keyset position (create_time, id).
SELECT * FROM webhooks
WHERE project_id = %(project_id)s AND (create_time, id) > (%(after_time)s, %(after_id)s)
ORDER BY create_time, id
LIMIT %(limit)s;

-- name: delete_webhook
-- Deletes a webhook; its pending messages and its log go with it.
DELETE FROM webhooks WHERE id = %(id)s RETURNING id;

-- name: enqueue_test_message
-- Enqueues a `webhook.test` message to one hook.
INSERT INTO webhook_deliveries (id, webhook_id, event_type, event_time)
VALUES (%(id)s, %(webhook_id)s, 'webhook.test', clock_timestamp())
RETURNING id, event_time;

-- name: claim_webhook_messages
-- Claims due messages of enabled hooks for one sender: SKIP LOCKED lets every
-- replica claim at once without sharing a message; the lease moves the next
-- attempt ahead, so a sender that dies mid-attempt leaves it to another.
UPDATE webhook_deliveries d
SET next_attempt_time = clock_timestamp() + make_interval(secs => %(lease_seconds)s),
    attempts = d.attempts + 1
FROM webhooks h
WHERE d.id IN (
    SELECT m.id FROM webhook_deliveries m JOIN webhooks w ON w.id = m.webhook_id AND w.enabled
    WHERE m.state = 'pending' AND m.next_attempt_time <= clock_timestamp()
    ORDER BY m.next_attempt_time
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
) AND h.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_type, d.event_time, d.job_id, d.snapshot, d.attempts, d.enqueue_time,
          h.url, h.secret;

-- name: record_webhook_success
-- Marks a message delivered, logs the attempt and resets the hook's failure count.
WITH done AS (
    UPDATE webhook_deliveries SET state = 'delivered', deliver_time = clock_timestamp()
    WHERE id = %(id)s AND state = 'pending' RETURNING id
), logged AS (
    INSERT INTO webhook_attempts (delivery_id, webhook_id, attempt, status_code, latency_ms)
    SELECT id, %(webhook_id)s, %(attempt)s, %(status_code)s, %(latency_ms)s FROM done
)
UPDATE webhooks SET consecutive_failures = 0 WHERE id = %(webhook_id)s AND consecutive_failures > 0;

-- name: record_webhook_failure
-- Logs a failed attempt, schedules the next (or gives the message up once
-- `retry_until` is past) and counts the failure on the hook, disabling it at
-- the limit.
WITH message AS (
    UPDATE webhook_deliveries
    SET next_attempt_time = clock_timestamp() + make_interval(secs => %(retry_in_seconds)s),
        state = CASE WHEN clock_timestamp() + make_interval(secs => %(retry_in_seconds)s)
                          > enqueue_time + make_interval(secs => %(retry_window_seconds)s)
                     THEN 'failed' ELSE 'pending' END
    WHERE id = %(id)s AND state = 'pending' RETURNING id
), logged AS (
    INSERT INTO webhook_attempts (delivery_id, webhook_id, attempt, status_code, latency_ms, error)
    SELECT id, %(webhook_id)s, %(attempt)s, %(status_code)s, %(latency_ms)s, %(error)s FROM message
)
UPDATE webhooks
SET consecutive_failures = consecutive_failures + 1,
    enabled = enabled AND consecutive_failures + 1 < %(disable_after)s,
    disabled_reason = CASE WHEN enabled AND consecutive_failures + 1 >= %(disable_after)s
                           THEN format('disabled after %%s consecutive failed attempts', consecutive_failures + 1)
                           ELSE disabled_reason END
WHERE id = %(webhook_id)s
RETURNING enabled;

-- name: list_webhook_attempts
-- A hook's delivery log, newest first, before a position.
SELECT a.id, a.delivery_id, a.attempt, a.attempt_time, a.status_code, a.latency_ms, a.error,
       d.event_type, d.state, d.job_id
FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE a.webhook_id = %(webhook_id)s AND a.id < %(before_id)s
ORDER BY a.id DESC
LIMIT %(limit)s;

-- name: count_webhooks
-- How many webhooks a project has.
SELECT count(*) AS n FROM webhooks WHERE project_id = %(project_id)s;

-- name: expire_webhook_messages
-- Deletes messages (and their log) finished longer ago than the retention.
DELETE FROM webhook_deliveries
WHERE state <> 'pending' AND enqueue_time < clock_timestamp() - make_interval(secs => %(retention_seconds)s);
