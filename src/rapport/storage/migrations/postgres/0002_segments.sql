-- Segment definitions: the latest version of each (workspace, id), deleted
-- ones included as tombstones (see rapport.core.segments).
-- ``revision`` grows with every write in any workspace; writers take a
-- transaction-level advisory lock, so revisions commit in order and the
-- maximum is what processors poll to know when to reload definitions.
CREATE TABLE segment_definitions (
    workspace_id text NOT NULL,
    id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    revision bigint NOT NULL,
    -- The SegmentDefinition as msgspec JSON. bytea, not jsonb: jsonb refuses
    -- \u0000 inside strings, which a condition value may hold.
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE UNIQUE INDEX segment_definitions_revision ON segment_definitions (revision);
