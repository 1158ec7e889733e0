-- Jobs users repeat and submit together: a resubmitted job names the job it
-- re-runs, and the jobs of one processing.create_batch share a batch id.

ALTER TABLE jobs ADD COLUMN resubmitted_from text REFERENCES jobs (id) ON DELETE SET NULL;
ALTER TABLE jobs ADD COLUMN batch_id text;
CREATE INDEX jobs_batch_idx ON jobs (batch_id) WHERE batch_id IS NOT NULL;
