-- An item with its assets and provenance sources, as one row: what every
-- read of an item returns (items.get, items.list, job assignments).
CREATE VIEW item_documents AS
SELECT i.id, i.project_id, i.collection_id, i.name, i.geometry, i.bbox_west, i.bbox_south, i.bbox_east,
       i.bbox_north, i.datetime, i.properties, i.create_time, i.job_id,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'key', a.key, 'storage_key', a.storage_key, 'media_type', a.media_type,
                    'title', a.title, 'roles', a.roles, 'size_bytes', a.size_bytes, 'sha256', a.sha256,
                    'bands', a.bands, 'grid', a.grid, 'render', a.render) ORDER BY a.key)
                 FROM assets a WHERE a.item_id = i.id), '[]'::jsonb) AS assets,
       coalesce((SELECT array_agg(p.source_item_id ORDER BY p.source_item_id) FROM provenance_edges p
                 WHERE p.output_item_id = i.id AND p.relation = 'derived_from'), '{}') AS source_item_ids
FROM items i;
