-- Files analytics methods store in a project (change rasters, quicklooks).

CREATE TABLE artifacts (
    id            text PRIMARY KEY,
    project_id    text NOT NULL REFERENCES projects (id),
    operation     text NOT NULL,
    key           text NOT NULL,
    title         text NOT NULL DEFAULT '',
    storage_key   text NOT NULL,
    media_type    text NOT NULL,
    size_bytes    bigint NOT NULL,
    sha256        text NOT NULL,
    created_by    text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_project_idx ON artifacts (project_id, create_time DESC);
