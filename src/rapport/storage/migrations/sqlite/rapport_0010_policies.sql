-- Workspace messaging policies (rapport.core.policy): EVERY version of each
-- workspace's document, so a verdict can be traced to the policy it applied.
-- Each write adds the next version; the highest version is the one in force.
CREATE TABLE policy_versions (
    workspace_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc BLOB NOT NULL, -- the StoredPolicy, msgspec JSON
    PRIMARY KEY (workspace_id, version)
);
