-- name: insert_artifact
INSERT INTO artifacts (id, project_id, operation, key, title, storage_key, media_type, size_bytes, sha256, created_by)
VALUES (%(id)s, %(project_id)s, %(operation)s, %(key)s, %(title)s, %(storage_key)s, %(media_type)s, %(size_bytes)s,
        %(sha256)s, %(created_by)s);

-- name: get_artifact_file
SELECT project_id, storage_key, media_type, size_bytes, sha256 FROM artifacts WHERE id = %(id)s;
