-- Idempotency keys: a spend claims its key in the transaction of its side effect (domain/idempotency.py).

-- name: set_claim_lock_timeout
-- How long a claim waits on a concurrent duplicate's transaction before the
-- call is answered IDEMPOTENCY_KEY_IN_USE (this transaction only).
SET LOCAL lock_timeout = '15s';

-- name: claim_idempotency_key
-- Keys are per project; a concurrent claim of the same key waits on the primary key.
INSERT INTO idempotency_keys (project_id, key, principal_id, operation, fingerprint, expire_time)
VALUES (%(project_id)s, %(key)s, %(principal_id)s, %(operation)s, %(fingerprint)s,
        now() + make_interval(secs => %(ttl_seconds)s))
ON CONFLICT (project_id, key) DO NOTHING
RETURNING key;

-- name: get_idempotency_key
-- A key's stored call: operation, fingerprint, response, and whether it expired.
SELECT operation, fingerprint, response, expire_time < now() AS expired
FROM idempotency_keys WHERE project_id = %(project_id)s AND key = %(key)s;

-- name: delete_idempotency_key
-- Forgets a key (an expired one being claimed anew).
DELETE FROM idempotency_keys WHERE project_id = %(project_id)s AND key = %(key)s;

-- name: finish_idempotency_key
-- Stores the response of the call that claimed the key.
UPDATE idempotency_keys SET response = %(response)s
WHERE project_id = %(project_id)s AND key = %(key)s;

-- name: expire_idempotency_keys
-- Drops every expired key (the hourly sweep).
DELETE FROM idempotency_keys WHERE expire_time < now();
