-- Message template definitions: EVERY version of each (workspace, template),
-- so a message can be traced to the exact text it was rendered from (see
-- rapport.core.templates). Each write adds the next version; deleting adds a
-- ``deleted`` tombstone. The latest version of an id says whether it is active.
CREATE TABLE template_versions (
    workspace_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc BLOB NOT NULL, -- the TemplateDefinition, msgspec JSON
    PRIMARY KEY (workspace_id, template_id, version)
);
