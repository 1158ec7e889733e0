-- name: insert_project
INSERT INTO projects (id, display_name) VALUES (%(id)s, %(display_name)s)
RETURNING id, display_name, create_time;

-- name: insert_credit_account
INSERT INTO credit_accounts (project_id) VALUES (%(project_id)s);

-- name: get_project
SELECT id, display_name, create_time FROM projects WHERE id = %(id)s;

-- name: list_projects
-- Projects after the page cursor; `member_ids` NULL means every project (admin).
SELECT id, display_name, create_time FROM projects
WHERE id > %(after_id)s
  AND (%(member_ids)s::text[] IS NULL OR id = ANY(%(member_ids)s::text[]))
ORDER BY id
LIMIT %(limit)s;
