-- name: insert_token
-- Stores a new token (its hash, never the secret).
INSERT INTO tokens (id, token_hash, name, kind, scopes)
VALUES (%(id)s, %(token_hash)s, %(name)s, %(kind)s, %(scopes)s);

-- name: insert_token_project
-- Grants a token access to one project.
INSERT INTO token_projects (token_id, project_id) VALUES (%(token_id)s, %(project_id)s);

-- name: insert_token_job_type
-- Grants a worker token one job type it may declare and run.
INSERT INTO token_job_types (token_id, job_type_id) VALUES (%(token_id)s, %(job_type_id)s);

-- name: principal_by_token_hash
-- The live (not revoked) token with that hash, with its projects and job types.
SELECT t.id, t.name, t.kind, t.scopes,
       coalesce(array_agg(tp.project_id) FILTER (WHERE tp.project_id IS NOT NULL), '{}') AS project_ids,
       coalesce((SELECT array_agg(g.job_type_id ORDER BY g.job_type_id) FROM token_job_types g
                 WHERE g.token_id = t.id), '{}') AS job_type_ids
FROM tokens t
LEFT JOIN token_projects tp ON tp.token_id = t.id
WHERE t.token_hash = %(token_hash)s AND t.revoke_time IS NULL
GROUP BY t.id;

-- name: list_tokens
-- Every token with its projects and job types, oldest first (no secrets).
SELECT t.id, t.name, t.kind, t.scopes, t.create_time, t.revoke_time,
       coalesce(array_agg(tp.project_id ORDER BY tp.project_id)
                FILTER (WHERE tp.project_id IS NOT NULL), '{}') AS project_ids,
       coalesce((SELECT array_agg(g.job_type_id ORDER BY g.job_type_id) FROM token_job_types g
                 WHERE g.token_id = t.id), '{}') AS job_type_ids
FROM tokens t
LEFT JOIN token_projects tp ON tp.token_id = t.id
GROUP BY t.id
ORDER BY t.create_time, t.id;

-- name: revoke_token
-- Revokes a token unless already revoked; no row when unknown or revoked.
UPDATE tokens SET revoke_time = now() WHERE id = %(id)s AND revoke_time IS NULL RETURNING id;
