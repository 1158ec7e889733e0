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
-- The project's credit account: balances and totals.
SELECT project_id, available, held, granted_total, captured_total
FROM credit_accounts WHERE project_id = %(project_id)s;

-- name: list_ledger
-- A page of the project's ledger, newest first, optionally one job's rows only.
SELECT id, project_id, job_id, kind, amount, available_after, held_after, note, create_time
FROM credit_ledger
WHERE project_id = %(project_id)s
  AND (%(job_id)s::text IS NULL OR job_id = %(job_id)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: insert_credit_account
-- Opens a new project's credit account at zero.
INSERT INTO credit_accounts (project_id) VALUES (%(project_id)s);

-- name: reserve_credits
-- Moves credits from available to held; the balance after; no row when it is too low.
WITH account AS (
    UPDATE credit_accounts SET available = available - %(amount)s, held = held + %(amount)s
    WHERE project_id = %(project_id)s AND available >= %(amount)s
    RETURNING project_id, available, held
)
INSERT INTO credit_ledger (project_id, job_id, kind, amount, available_after, held_after, note)
SELECT project_id, %(job_id)s, 'reserve', %(amount)s, available, held, %(note)s FROM account
RETURNING id, available_after;

-- name: lock_balance
-- The project's credit account, locked until commit (a batch checks what it can hold first).
SELECT project_id, available, held, granted_total, captured_total
FROM credit_accounts WHERE project_id = %(project_id)s FOR UPDATE;

-- name: reserve_batch_credits
-- Holds the credits of several new jobs at once (arrays in step): one update
-- of the account by their total, one `reserve` ledger row per job with the
-- balance right after it, in array order; no row when the total is too low.
WITH given AS (
    SELECT g.job_id, g.amount, g.position,
           sum(g.amount) OVER (ORDER BY g.position) AS running
    FROM unnest(%(job_ids)s::text[], %(amounts)s::bigint[]) WITH ORDINALITY AS g (job_id, amount, position)
), total AS (
    SELECT coalesce(sum(amount), 0) AS amount FROM given
), account AS (
    UPDATE credit_accounts SET available = available - total.amount, held = held + total.amount
    FROM total
    WHERE project_id = %(project_id)s AND available >= total.amount
    RETURNING project_id, available, held, total.amount AS total
)
INSERT INTO credit_ledger (project_id, job_id, kind, amount, available_after, held_after, note)
SELECT account.project_id, given.job_id, 'reserve', given.amount,
       account.available + account.total - given.running, account.held - account.total + given.running, %(note)s
FROM account, given
ORDER BY given.position
RETURNING id, available_after;

-- name: settle_credits
-- A finished job's hold in one statement (one lock of the account row, taken
-- last in its transaction): `captured` moves from held to captured, `released`
-- from held back to available, `waived` (the actual cost above the hold) is
-- only recorded. One ledger row per nonzero amount, in that order, each with
-- the balance right after it. No row when every amount is zero.
WITH account AS (
    UPDATE credit_accounts
    SET available = available + %(released)s, held = held - %(captured)s - %(released)s,
        captured_total = captured_total + %(captured)s
    WHERE project_id = %(project_id)s AND %(captured)s::bigint + %(released)s::bigint + %(waived)s::bigint > 0
    RETURNING project_id, available, held
)
INSERT INTO credit_ledger (project_id, job_id, kind, amount, available_after, held_after, note)
SELECT account.project_id, %(job_id)s, e.kind, e.amount, account.available - e.released_later,
       account.held + e.released_later, e.note
FROM account,
     (VALUES (1, 'capture', %(captured)s::bigint, %(released)s::bigint, %(capture_note)s::text),
             (2, 'release', %(released)s::bigint, 0::bigint, %(release_note)s::text),
             (3, 'waive', %(waived)s::bigint, 0::bigint, %(waive_note)s::text))
         AS e (position, kind, amount, released_later, note)
WHERE e.amount > 0
ORDER BY e.position
RETURNING id;
