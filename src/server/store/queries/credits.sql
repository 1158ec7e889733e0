-- name: grant_credits
-- Adds to the available balance and writes the ledger row in one statement.
WITH account AS (
    UPDATE credit_accounts
    SET available = available + %(amount)s, granted_total = granted_total + %(amount)s
    WHERE project_id = %(project_id)s
    RETURNING project_id, available, held
)
INSERT INTO credit_ledger (project_id, job_id, kind, amount, available_after, held_after, note)
SELECT project_id, NULL, 'grant', %(amount)s, available, held, %(note)s FROM account
RETURNING id, project_id, job_id, kind, amount, available_after, held_after, note, create_time;

-- name: get_balance
-- A project's credit balance.
SELECT project_id, available, held, granted_total, captured_total
FROM credit_accounts WHERE project_id = %(project_id)s;

-- name: list_ledger
-- One page of a project's credit ledger, newest first, optionally for one job.
SELECT id, project_id, job_id, kind, amount, available_after, held_after, note, create_time
FROM credit_ledger
WHERE project_id = %(project_id)s
  AND (%(job_id)s::text IS NULL OR job_id = %(job_id)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;
