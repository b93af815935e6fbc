-- Computed-trait backfill jobs (see rapport.core.backfill, kind
-- ``computed_trait``): one row per (workspace, trait), the job of the newest
-- version. A write of an older version's progress never replaces a newer
-- version's job.
CREATE TABLE computed_trait_backfills (
    workspace_id TEXT NOT NULL,
    trait_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc BLOB NOT NULL, -- the BackfillJob, msgspec JSON
    PRIMARY KEY (workspace_id, trait_id)
);

CREATE INDEX computed_trait_backfills_status ON computed_trait_backfills (status);
