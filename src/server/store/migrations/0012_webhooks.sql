-- Webhooks (issue 13.3): a project's subscriptions to job events, delivered
-- through an outbox that any replica sends from (see domain/webhooks).

CREATE TABLE webhooks (
    id                   text PRIMARY KEY,
    project_id           text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url                  text NOT NULL,
    event_types          text[] NOT NULL,
    -- The Standard Webhooks signing secret (`whsec_` + base64 of 32 random
    -- bytes): kept in clear because the server signs with it; returned once.
    secret               text NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text NOT NULL DEFAULT '',
    -- Failed attempts since the last success; the hook is disabled at the limit.
    consecutive_failures integer NOT NULL DEFAULT 0,
    create_time          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_by_project ON webhooks (project_id, create_time);

-- The outbox: one row per message (event x hook), written in the transaction
-- of the job event that causes it, so a commit never loses one and a rollback
-- never sends one. `id` is the message's `webhook-id`, the same on every retry.
CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    webhook_id        text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type        text NOT NULL,
    event_time        timestamptz NOT NULL,
    job_id            text NOT NULL DEFAULT '',
    -- The job as the event saw it (job_events.snapshot), rendered at send time.
    snapshot          jsonb NOT NULL DEFAULT '{}',
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; a sender's claim moves it ahead by a lease,
    -- so a sender that dies mid-attempt leaves the message for another.
    next_attempt_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    enqueue_time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    deliver_time      timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id   text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    attempt_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code  integer NOT NULL DEFAULT 0,
    latency_ms   double precision NOT NULL DEFAULT 0,
    error        text NOT NULL DEFAULT ''
);
CREATE INDEX webhook_attempts_by_hook ON webhook_attempts (webhook_id, id DESC);
