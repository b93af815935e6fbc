-- Workspace messaging policies (rapport.core.policy): EVERY version of each
-- workspace's document, so a verdict can be traced to the policy it applied.
-- Each write adds the next version; the highest version is the one in force.
CREATE TABLE policy_versions (
    workspace_id text NOT NULL,
    version integer NOT NULL,
    -- The StoredPolicy as msgspec JSON (bytea, as template_versions.doc).
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, version)
);
