-- name: insert_artifact
-- Records a file an analytics method stored.
INSERT INTO artifacts (id, project_id, operation, key, title, storage_key, media_type, size_bytes, sha256, created_by,
                       job_id)
VALUES (%(id)s, %(project_id)s, %(operation)s, %(key)s, %(title)s, %(storage_key)s, %(media_type)s, %(size_bytes)s,
        %(sha256)s, %(created_by)s, %(job_id)s);

-- name: get_artifact_file
-- Where an artifact's bytes are, with the project that owns it.
SELECT project_id, storage_key, media_type, size_bytes, sha256 FROM artifacts WHERE id = %(id)s;

-- name: expire_artifacts
-- Deletes artifacts older than the retention; their bytes are removed after the commit.
DELETE FROM artifacts WHERE create_time < now() - make_interval(secs => %(retention_seconds)s)
RETURNING id, storage_key;

-- name: referenced_storage_keys
-- Which of the given storage keys an asset or an artifact names.
SELECT storage_key FROM assets WHERE storage_key = ANY(%(keys)s)
UNION
SELECT storage_key FROM artifacts WHERE storage_key = ANY(%(keys)s);

-- name: live_upload_ids
-- Which of the given upload ids have a row (their staging file is in use).
SELECT id FROM uploads WHERE id = ANY(%(ids)s);

-- name: get_artifact_render_source
-- What tiles of an artifact need: its project, the method and key that made it, its bytes.
SELECT project_id, operation, key, storage_key, media_type, sha256 FROM artifacts WHERE id = %(id)s;
