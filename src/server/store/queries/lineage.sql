-- Provenance: which job made an item from which sources, and the lineage walk over it.

-- name: insert_provenance_edge
-- Records that an output item was derived by a job (from a source item, or none).
INSERT INTO provenance_edges (output_item_id, relation, job_id, source_item_id)
VALUES (%(output_item_id)s, %(relation)s, %(job_id)s, %(source_item_id)s);

-- name: item_sources
-- Provenance of the given items (their jobs and source items).
SELECT output_item_id, relation, job_id, source_item_id FROM provenance_edges
WHERE output_item_id = ANY(%(ids)s);

-- name: item_derivatives
-- Edges whose source is one of the given items (what was derived from them).
SELECT output_item_id, relation, job_id, source_item_id FROM provenance_edges
WHERE source_item_id = ANY(%(ids)s);

-- name: lineage_labels
-- Display labels and projects of the items and jobs of a lineage graph.
SELECT 'item' AS kind, id, name AS label, project_id FROM items WHERE id = ANY(%(item_ids)s)
UNION ALL
SELECT 'job', id, job_type_id, project_id FROM jobs WHERE id = ANY(%(job_ids)s);
