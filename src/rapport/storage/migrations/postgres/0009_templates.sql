-- Message template definitions: EVERY version of each (workspace, template),
-- so a message can be traced to the exact text it was rendered from (see
-- rapport.core.templates). Each write adds the next version; deleting adds a
-- ``deleted`` tombstone. The latest version of an id says whether it is active.
CREATE TABLE template_versions (
    workspace_id text NOT NULL,
    template_id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    -- The TemplateDefinition as msgspec JSON. bytea, not jsonb: jsonb refuses
    -- \u0000 inside strings, which a template's text may hold.
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, template_id, version)
);
