-- name: insert_server_key
-- Store a generated secret unless one of that name exists (the first replica wins).
INSERT INTO server_keys (name, secret) VALUES (%(name)s, %(secret)s) ON CONFLICT (name) DO NOTHING;

-- name: get_server_key
-- The secret of that name.
SELECT secret FROM server_keys WHERE name = %(name)s;
