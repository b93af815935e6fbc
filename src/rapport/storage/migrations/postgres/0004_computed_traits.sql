-- Computed-trait definitions: the latest version of each (workspace, id),
-- deleted ones included as tombstones (see rapport.core.computed_traits).
-- ``revision`` grows with every write in any workspace; writers take a
-- transaction-level advisory lock, so revisions commit in order and the
-- maximum is what processors poll to know when to reload definitions.
CREATE TABLE computed_trait_definitions (
    workspace_id text NOT NULL,
    id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    revision bigint NOT NULL,
    -- The ComputedTraitDefinition as msgspec JSON (bytea: jsonb refuses \u0000).
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE UNIQUE INDEX computed_trait_definitions_revision ON computed_trait_definitions (revision);
