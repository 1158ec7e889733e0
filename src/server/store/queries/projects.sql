-- name: insert_project
-- Creates a project.
INSERT INTO projects (id, display_name) VALUES (%(id)s, %(display_name)s)
RETURNING id, display_name, create_time;

-- name: get_project
-- One project.
SELECT id, display_name, create_time FROM projects WHERE id = %(id)s;

-- name: list_projects
-- Projects after the page cursor; `member_ids` NULL means every project (admin).
SELECT id, display_name, create_time FROM projects
WHERE id > %(after_id)s
  AND (%(member_ids)s::text[] IS NULL OR id = ANY(%(member_ids)s::text[]))
ORDER BY id
LIMIT %(limit)s;

-- name: lock_project_quota
-- Locks the project row, so a project's storage writes check its quota one at a time (NO KEY: inserts referencing the project, e.g. new jobs, need not wait).
SELECT storage_quota_bytes FROM projects WHERE id = %(project_id)s FOR NO KEY UPDATE;

-- name: project_storage_usage
-- Bytes a project holds: item assets, analytics artifacts, and uploads waiting for items.create.
SELECT (SELECT coalesce(sum(a.size_bytes), 0) FROM assets a JOIN items i ON i.id = a.item_id
        WHERE i.project_id = %(project_id)s)
     + (SELECT coalesce(sum(size_bytes), 0) FROM artifacts WHERE project_id = %(project_id)s)
     + (SELECT coalesce(sum(size_bytes), 0) FROM uploads
        WHERE project_id = %(project_id)s AND consume_time IS NULL AND expire_time > now()) AS used_bytes,
       (SELECT storage_quota_bytes FROM projects WHERE id = %(project_id)s) AS quota_bytes;

-- name: set_project_quota
-- Sets (or with NULL clears) a project's storage quota override.
UPDATE projects SET storage_quota_bytes = %(quota_bytes)s WHERE id = %(project_id)s RETURNING id;
