-- name: idempotency_lock_timeout
-- Bounds, until the transaction ends, how long a claim waits for a key another request holds (SET LOCAL lock_timeout).
SELECT set_config('lock_timeout', %(timeout)s, true);
