-- Every job event enqueues the webhook messages of the hooks subscribed to it
-- (the outbox, webhook_deliveries) in the statement that writes the event, so
-- the message commits with the event or not at all. The queries that write job
-- events (insert_events, report_progress) each carried this INSERT before; one
-- trigger now serves every writer of job_events.
CREATE FUNCTION enqueue_job_event_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, webhook_id, event_type, event_time, job_id, snapshot)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), h.id, 'job.' || e.event_type,
           e.event_time, e.job_id, e.snapshot
    FROM new_events e JOIN webhooks h ON h.project_id = e.snapshot ->> 'project_id' AND h.enabled
                                       AND ('job.' || e.event_type) = ANY (h.event_types);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_events_webhook_outbox AFTER INSERT ON job_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION enqueue_job_event_webhooks();
