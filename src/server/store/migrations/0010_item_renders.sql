-- Each item in its ready API encoding (a serialized geopera.v1.Item), so a read
-- is one indexed lookup returning bytes instead of the item_documents aggregate,
-- its JSON decoding and the conversion to protobuf. Items never change, so a
-- render stays right until the server's encoding changes: `render_key` names the
-- encoding that wrote the row, and a row under another key counts as missing.
-- Rows are written on an item's first read (items created before this table, or
-- by a job, which adds provenance after the insert, are covered the same way).
-- UNLOGGED: a render can always be rebuilt from the item's rows, so it needs no
-- WAL, and a commit that writes only renders waits for no disk flush (with 64
-- concurrent first reads, a flush per render made them 40x slower). A crash
-- empties the table; reads refill it.
CREATE UNLOGGED TABLE item_renders (
    item_id    text PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    project_id text NOT NULL,
    render_key text NOT NULL,
    body       bytea NOT NULL
);
