-- Storage hygiene: a per-project storage quota (NULL: the server's default)
-- and an index for expiring analytics artifacts by age.

ALTER TABLE projects ADD COLUMN storage_quota_bytes bigint CHECK (storage_quota_bytes >= 0);

CREATE INDEX artifacts_create_time_idx ON artifacts (create_time);

-- The storage sweep asks which stored objects a row still names.
CREATE INDEX assets_storage_key_idx ON assets (storage_key);
CREATE INDEX artifacts_storage_key_idx ON artifacts (storage_key);
