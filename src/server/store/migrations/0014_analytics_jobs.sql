-- Analytics as jobs (analytics.submit): a job's stored artifacts (the JSON
-- result, then the method's files), listed on the job as its references.

ALTER TABLE jobs ADD COLUMN output_artifacts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE artifacts ADD COLUMN job_id text REFERENCES jobs (id);
CREATE INDEX artifacts_job_idx ON artifacts (job_id) WHERE job_id IS NOT NULL;
