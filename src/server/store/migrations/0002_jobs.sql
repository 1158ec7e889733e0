-- Processing: job types, workers, jobs with their events, job tokens,
-- provenance and idempotency keys.

CREATE TABLE job_types (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    description     text NOT NULL DEFAULT '',
    input_schema    jsonb NOT NULL,
    cost_flat       double precision NOT NULL DEFAULT 1,
    cost_per_km2    double precision NOT NULL DEFAULT 0,
    cost_per_asset  double precision NOT NULL DEFAULT 0,
    cost_minimum    bigint NOT NULL DEFAULT 1,
    builtin         boolean NOT NULL DEFAULT false,
    update_time     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    id                  text PRIMARY KEY,
    token_id            text NOT NULL,
    name                text NOT NULL,
    job_type_ids        text[] NOT NULL,
    capacity            integer NOT NULL CHECK (capacity BETWEEN 0 AND 64),
    connected           boolean NOT NULL DEFAULT true,
    connect_time        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                   text PRIMARY KEY,
    project_id           text NOT NULL REFERENCES projects (id),
    job_type_id          text NOT NULL REFERENCES job_types (id),
    status               text NOT NULL CHECK (status IN
                         ('PENDING', 'DISPATCHED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    input_params         jsonb NOT NULL,
    target_collection_id text NOT NULL,
    source_item_ids      text[] NOT NULL DEFAULT '{}',
    progress             double precision NOT NULL DEFAULT 0,
    attempt              integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL DEFAULT 3,
    worker_id            text,
    lease_expire_time    timestamptz,
    -- A queued job is claimable from this time on (retry backoff).
    available_time       timestamptz,
    create_time          timestamptz NOT NULL DEFAULT now(),
    dispatch_time        timestamptz,
    start_time           timestamptz,
    end_time             timestamptz,
    update_time          timestamptz NOT NULL DEFAULT now(),
    credits_reserved     bigint NOT NULL CHECK (credits_reserved >= 0),
    credits_charged      bigint NOT NULL DEFAULT 0,
    error                jsonb,
    message              text NOT NULL DEFAULT '',
    cancel_requested     boolean NOT NULL DEFAULT false,
    output_item_ids      text[] NOT NULL DEFAULT '{}',
    -- The RegisterOutputs response of the committing attempt, replayed on retry.
    outputs_response     bytea,
    sequence             bigint NOT NULL DEFAULT 0,
    created_by           text NOT NULL
);
CREATE INDEX jobs_project_create_idx ON jobs (project_id, create_time DESC, id DESC);
CREATE INDEX jobs_queue_idx ON jobs (job_type_id, available_time, id)
    WHERE status = 'DISPATCHED' AND worker_id IS NULL;
CREATE INDEX jobs_lease_idx ON jobs (lease_expire_time)
    WHERE status IN ('DISPATCHED', 'RUNNING') AND worker_id IS NOT NULL;
CREATE INDEX jobs_worker_idx ON jobs (worker_id) WHERE status IN ('DISPATCHED', 'RUNNING');

CREATE TABLE job_events (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sequence    bigint NOT NULL,
    event_type  text NOT NULL,
    event_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    snapshot    jsonb NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

-- Job tokens: bound to one (job, attempt); only their hash is stored.
CREATE TABLE job_tokens (
    token_hash  bytea PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker_id   text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_tokens_job_idx ON job_tokens (job_id);

ALTER TABLE items ADD CONSTRAINT items_job_fk FOREIGN KEY (job_id) REFERENCES jobs (id);

-- Provenance: every output item -> its job (generated_by) and each source
-- item (derived_from). Written only by RegisterOutputs.
CREATE TABLE provenance_edges (
    output_item_id  text NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    relation        text NOT NULL CHECK (relation IN ('generated_by', 'derived_from')),
    job_id          text NOT NULL REFERENCES jobs (id),
    source_item_id  text REFERENCES items (id),
    CHECK ((relation = 'generated_by') = (source_item_id IS NULL))
);
CREATE UNIQUE INDEX provenance_edges_key ON provenance_edges
    (output_item_id, relation, job_id, coalesce(source_item_id, ''));
CREATE INDEX provenance_edges_source_idx ON provenance_edges (source_item_id);
CREATE INDEX provenance_edges_job_idx ON provenance_edges (job_id);

ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_job_fk FOREIGN KEY (job_id) REFERENCES jobs (id);

-- Idempotency keys of spend operations, written in the transaction of the
-- side effect: a concurrent duplicate blocks on the primary key until the
-- first commits, then replays its response.
CREATE TABLE idempotency_keys (
    principal_id  text NOT NULL,
    key           text NOT NULL,
    operation     text NOT NULL,
    fingerprint   bytea NOT NULL,
    response      bytea,
    create_time   timestamptz NOT NULL DEFAULT now(),
    expire_time   timestamptz NOT NULL,
    PRIMARY KEY (principal_id, key)
);
CREATE INDEX idempotency_keys_expire_idx ON idempotency_keys (expire_time);
