-- Journey definitions: EVERY version of each (workspace, journey), since
-- instances refer to the version they entered on (see rapport.core.journeys).
-- ``status`` is draft, published, paused or archived; a draft's doc may be
-- replaced in place, any other change is a status change.
-- ``revision`` is set from a global counter on every write of a row, so its
-- maximum grows with every change in any workspace: processors poll it to
-- know when to reload definitions.
CREATE TABLE journey_versions (
    workspace_id TEXT NOT NULL,
    journey_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc BLOB NOT NULL, -- the JourneyVersion, msgspec JSON
    PRIMARY KEY (workspace_id, journey_id, version)
);

CREATE UNIQUE INDEX journey_versions_revision ON journey_versions (revision);
CREATE INDEX journey_versions_status ON journey_versions (workspace_id, status);
