-- Analytics jobs run on workers now, and a worker with the built-in plugins
-- declares the job type `analytics`. Upgrade: a credential granted a built-in
-- job type its workers run (clip, bathymetry) is granted `analytics` too, so
-- those workers reconnect as before; new tokens get only what is granted.
INSERT INTO token_job_types (token_id, job_type_id)
SELECT DISTINCT token_id, 'analytics'
FROM token_job_types
WHERE job_type_id IN ('clip', 'bathymetry')
ON CONFLICT DO NOTHING;
