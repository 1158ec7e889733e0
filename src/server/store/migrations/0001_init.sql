-- Projects, tokens, the item catalog and uploads.

CREATE TABLE projects (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name  text NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens. Only the SHA-256 of a token is stored; tokens are 256-bit
-- random strings, so an unsalted hash is enough and allows an indexed lookup.
CREATE TABLE tokens (
    id            text PRIMARY KEY,
    token_hash    bytea NOT NULL CONSTRAINT tokens_hash_key UNIQUE,
    name          text NOT NULL DEFAULT '',
    kind          text NOT NULL CHECK (kind IN ('user', 'admin', 'worker')),
    scopes        text[] NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    revoke_time   timestamptz
);

CREATE TABLE token_projects (
    token_id      text NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    project_id    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, project_id)
);

CREATE TABLE collections (
    project_id    text NOT NULL REFERENCES projects (id),
    id            text NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);

CREATE TABLE items (
    id            text PRIMARY KEY,
    project_id    text NOT NULL,
    collection_id text NOT NULL,
    name          text NOT NULL,
    geometry      jsonb NOT NULL,
    bbox_west     double precision NOT NULL,
    bbox_south    double precision NOT NULL,
    bbox_east     double precision NOT NULL,
    bbox_north    double precision NOT NULL,
    datetime      timestamptz NOT NULL,
    properties    jsonb NOT NULL DEFAULT '{}'::jsonb,
    create_time   timestamptz NOT NULL DEFAULT now(),
    job_id        text,
    FOREIGN KEY (project_id, collection_id) REFERENCES collections (project_id, id),
    CONSTRAINT items_name_key UNIQUE (project_id, collection_id, name)
);
CREATE INDEX items_project_datetime_idx ON items (project_id, datetime, id);
CREATE INDEX items_project_collection_datetime_idx ON items (project_id, collection_id, datetime, id);

CREATE TABLE assets (
    item_id       text NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    key           text NOT NULL CHECK (key ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    storage_key   text NOT NULL,
    media_type    text NOT NULL,
    title         text NOT NULL DEFAULT '',
    roles         text[] NOT NULL,
    size_bytes    bigint NOT NULL,
    sha256        text NOT NULL,
    bands         jsonb NOT NULL,
    grid          jsonb NOT NULL,
    render        jsonb NOT NULL,
    PRIMARY KEY (item_id, key)
);

-- Files received over UploadAsset, waiting for items.create.
CREATE TABLE uploads (
    id            text PRIMARY KEY,
    project_id    text NOT NULL REFERENCES projects (id),
    token_id      text NOT NULL,
    file_name     text NOT NULL DEFAULT '',
    staging_path  text NOT NULL,
    size_bytes    bigint NOT NULL,
    sha256        text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    expire_time   timestamptz NOT NULL,
    consume_time  timestamptz
);
CREATE INDEX uploads_expire_idx ON uploads (expire_time) WHERE consume_time IS NULL;

-- Credit accounts. The CHECKs make a negative balance impossible whatever the
-- concurrency: a reservation that would overdraw fails the UPDATE.
CREATE TABLE credit_accounts (
    project_id     text PRIMARY KEY REFERENCES projects (id),
    available      bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    held           bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    granted_total  bigint NOT NULL DEFAULT 0,
    captured_total bigint NOT NULL DEFAULT 0
);

CREATE TABLE credit_ledger (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id),
    job_id          text,
    kind            text NOT NULL CHECK (kind IN ('grant', 'reserve', 'capture', 'release')),
    amount          bigint NOT NULL CHECK (amount > 0),
    available_after bigint NOT NULL,
    held_after      bigint NOT NULL,
    note            text NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_project_idx ON credit_ledger (project_id, id DESC);
