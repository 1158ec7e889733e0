-- Idempotency keys are scoped per project instead of per token, so a retry
-- from another token of the project (or after rotating a token) replays the
-- first response. `principal_id` stays as the token that first used the key.

ALTER TABLE idempotency_keys ADD COLUMN project_id text;

-- Keys of a token with exactly one project move to that project; keys of admin
-- or multi-project tokens cannot be placed and are dropped (they live 48 h).
UPDATE idempotency_keys k SET project_id = t.project_id
FROM (
    SELECT token_id, min(project_id) AS project_id
    FROM token_projects GROUP BY token_id HAVING count(*) = 1
) t
WHERE t.token_id = k.principal_id;
DELETE FROM idempotency_keys WHERE project_id IS NULL;
-- Two tokens of one project may have used the same key: the first use wins.
DELETE FROM idempotency_keys k USING idempotency_keys first
WHERE first.project_id = k.project_id AND first.key = k.key
  AND (first.create_time, first.principal_id) < (k.create_time, k.principal_id);

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ALTER COLUMN project_id SET NOT NULL;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (project_id, key);
