-- Journey definitions: EVERY version of each (workspace, journey), since
-- instances refer to the version they entered on (see rapport.core.journeys).
-- ``status`` is draft, published, paused or archived; a draft's doc may be
-- replaced in place, any other change is a status change.
-- ``revision`` is set from a global counter on every write of a row; writers
-- take a transaction-level advisory lock, so revisions commit in order and
-- the maximum is what processors poll to know when to reload definitions.
CREATE TABLE journey_versions (
    workspace_id text NOT NULL,
    journey_id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    revision bigint NOT NULL,
    -- The JourneyVersion as msgspec JSON. bytea, not jsonb: jsonb refuses
    -- \u0000 inside strings, which a definition's values may hold.
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, journey_id, version)
);

CREATE UNIQUE INDEX journey_versions_revision ON journey_versions (revision);
CREATE INDEX journey_versions_status ON journey_versions (workspace_id, status);
