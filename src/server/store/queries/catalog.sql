-- name: ensure_collection
-- Creates the project's collection unless it exists.
INSERT INTO collections (project_id, id) VALUES (%(project_id)s, %(collection_id)s)
ON CONFLICT DO NOTHING;

-- name: insert_item
-- Adds a catalogue item; its assets follow with insert_asset.
INSERT INTO items (id, project_id, collection_id, name, geometry, bbox_west, bbox_south, bbox_east,
                   bbox_north, datetime, properties, job_id)
VALUES (%(id)s, %(project_id)s, %(collection_id)s, %(name)s, %(geometry)s, %(bbox_west)s, %(bbox_south)s,
        %(bbox_east)s, %(bbox_north)s, %(datetime)s, %(properties)s, %(job_id)s)
RETURNING create_time;

-- name: insert_asset
-- Adds one asset (a file) to an item.
INSERT INTO assets (item_id, key, storage_key, media_type, title, roles, size_bytes, sha256, bands, grid,
                    render)
VALUES (%(item_id)s, %(key)s, %(storage_key)s, %(media_type)s, %(title)s, %(roles)s, %(size_bytes)s,
        %(sha256)s, %(bands)s, %(grid)s, %(render)s);

-- name: get_item
-- One item as its document (the item_documents view: item, assets and links).
SELECT * FROM item_documents WHERE id = %(id)s;

-- name: get_items
-- Several items as get_item reads one (items.get's first reads, batched).
SELECT * FROM item_documents WHERE id = ANY(%(ids)s::text[]);

-- name: get_item_renders
-- The stored encodings (and projects, for the access check) of the items among `ids` that have one under
-- this render key: one lookup for all the items.get calls that missed the memory cache at once.
SELECT item_id, project_id, body FROM item_renders
WHERE item_id = ANY(%(ids)s::text[]) AND render_key = %(render_key)s;

-- name: put_item_render
-- Store (or replace a stale) encoding of an item.
INSERT INTO item_renders (item_id, project_id, render_key, body)
VALUES (%(id)s, %(project_id)s, %(render_key)s, %(body)s)
ON CONFLICT (item_id) DO UPDATE SET project_id = excluded.project_id, render_key = excluded.render_key,
                                    body = excluded.body;

-- name: put_item_renders
-- Store (or replace stale) encodings of several items, one row per array position. The bodies go
-- in binary format (the b placeholder): psycopg sends a list of bytes as hex text otherwise, costly on both sides.
INSERT INTO item_renders (item_id, project_id, render_key, body)
SELECT r.item_id, r.project_id, %(render_key)s, r.body
FROM unnest(%(ids)s::text[], %(project_ids)s::text[], %(bodies)b::bytea[]) AS r(item_id, project_id, body)
ON CONFLICT (item_id) DO UPDATE SET project_id = excluded.project_id, render_key = excluded.render_key,
                                    body = excluded.body;

-- name: item_name_taken
-- A row when the project's collection already has an item of this name (job output checks).
SELECT 1 FROM items
WHERE project_id = %(project_id)s AND collection_id = %(collection_id)s AND name = %(name)s;

-- name: item_names_taken
-- Which of several (collection, name) pairs of a project already name an item (arrays in step).
SELECT g.collection_id, g.name
FROM unnest(%(collection_ids)s::text[], %(names)s::text[]) AS g (collection_id, name)
WHERE EXISTS (SELECT 1 FROM items i
              WHERE i.project_id = %(project_id)s AND i.collection_id = g.collection_id AND i.name = g.name);

-- name: list_items
-- A page of the items of some projects (one, for items.list) in (datetime, id) order after the cursor.
SELECT * FROM item_documents i
WHERE i.project_id = ANY(%(project_ids)s::text[])
  AND (%(item_ids)s::text[] IS NULL OR i.id = ANY(%(item_ids)s::text[]))
  AND (%(collection_id)s::text IS NULL OR i.collection_id = %(collection_id)s::text)
  AND (%(west)s::float8 IS NULL OR (i.bbox_east >= %(west)s::float8 AND i.bbox_west <= %(east)s::float8
       AND i.bbox_north >= %(south)s::float8 AND i.bbox_south <= %(north)s::float8))
  AND (%(datetime_start)s::timestamptz IS NULL OR i.datetime >= %(datetime_start)s::timestamptz)
  AND (%(datetime_end)s::timestamptz IS NULL OR i.datetime < %(datetime_end)s::timestamptz)
  AND (%(after_datetime)s::timestamptz IS NULL
       OR (i.datetime, i.id) > (%(after_datetime)s::timestamptz, %(after_id)s::text))
ORDER BY i.datetime, i.id
LIMIT %(limit)s;

-- name: project_extent
-- The bounding box and time span of a project's items (NULLs when it has none).
SELECT min(bbox_west) AS west, min(bbox_south) AS south, max(bbox_east) AS east, max(bbox_north) AS north,
       min(datetime) AS first_datetime, max(datetime) AS last_datetime
FROM items WHERE project_id = %(project_id)s;

-- name: item_project
-- The project an item belongs to.
SELECT project_id FROM items WHERE id = %(id)s;

-- name: get_asset_file
-- Where an asset's bytes are, with the project that owns its item.
SELECT i.project_id, a.storage_key, a.media_type, a.size_bytes, a.sha256
FROM assets a JOIN items i ON i.id = a.item_id
WHERE a.item_id = %(item_id)s AND a.key = %(key)s;

-- name: insert_upload
-- Records an uploaded file waiting in staging for items.create, with its expiry.
INSERT INTO uploads (id, project_id, token_id, file_name, staging_path, size_bytes, sha256, expire_time)
VALUES (%(id)s, %(project_id)s, %(token_id)s, %(file_name)s, %(staging_path)s, %(size_bytes)s, %(sha256)s,
        now() + make_interval(secs => %(ttl_seconds)s))
RETURNING expire_time;

-- name: lock_upload
-- Lock an upload for consumption by items.create (a concurrent create of the
-- same upload waits, then sees it consumed).
SELECT id, project_id, staging_path, size_bytes, sha256, file_name, consume_time, expire_time < now() AS expired
FROM uploads WHERE id = %(id)s
FOR UPDATE;

-- name: consume_upload
-- Marks an upload as used by the item that took its file.
UPDATE uploads SET consume_time = now() WHERE id = %(id)s;

-- name: expired_uploads
-- Deletes uploads expired or consumed over an hour ago and returns their staging files to remove.
DELETE FROM uploads WHERE expire_time < now() OR consume_time < now() - interval '1 hour'
RETURNING staging_path;
