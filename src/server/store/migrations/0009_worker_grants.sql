-- Worker credentials: the job types an admin granted each worker token, the
-- credential that owns (may change) each declared job type, and worker
-- sessions, so the cleanup of a superseded session never touches its
-- successor.

CREATE TABLE token_job_types (
    token_id     text NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    job_type_id  text NOT NULL CHECK (job_type_id ~ '^[a-z][a-z0-9_]{0,62}$'),
    PRIMARY KEY (token_id, job_type_id)
);

-- Upgrade: a credential keeps the job types its workers declared so far, so
-- running workers reconnect as before; new tokens get only what is granted.
INSERT INTO token_job_types (token_id, job_type_id)
SELECT DISTINCT w.token_id, declared.job_type_id
FROM workers w
JOIN tokens t ON t.id = w.token_id
CROSS JOIN unnest(w.job_type_ids) AS declared (job_type_id)
WHERE declared.job_type_id ~ '^[a-z][a-z0-9_]{0,62}$'
ON CONFLICT DO NOTHING;

-- NULL for built-in types (the server defines them) and for types no
-- credential owns yet; the first credential to change such a type owns it.
ALTER TABLE job_types ADD COLUMN owner_token_id text;
UPDATE job_types jt SET owner_token_id = (
    SELECT w.token_id FROM workers w WHERE jt.id = ANY (w.job_type_ids) ORDER BY w.connect_time, w.id LIMIT 1
)
WHERE NOT jt.builtin;

-- A new id per Connect stream; the row belongs to the newest session.
ALTER TABLE workers ADD COLUMN session_id text NOT NULL DEFAULT '';
