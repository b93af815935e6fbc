-- Computed-trait definitions: the latest version of each (workspace, id),
-- deleted ones included as tombstones (see rapport.core.computed_traits).
-- ``revision`` grows with every write in any workspace; its maximum is what
-- processors poll to know when to reload definitions.
CREATE TABLE computed_trait_definitions (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc BLOB NOT NULL, -- the ComputedTraitDefinition, msgspec JSON
    PRIMARY KEY (workspace_id, id)
);

CREATE UNIQUE INDEX computed_trait_definitions_revision ON computed_trait_definitions (revision);
