-- Computed-trait backfill jobs (see rapport.core.backfill, kind
-- ``computed_trait``): one row per (workspace, trait), the job of the newest
-- version. A write of an older version's progress never replaces a newer
-- version's job.
CREATE TABLE computed_trait_backfills (
    workspace_id text NOT NULL,
    trait_id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    doc bytea NOT NULL, -- the BackfillJob, msgspec JSON
    PRIMARY KEY (workspace_id, trait_id)
);

CREATE INDEX computed_trait_backfills_status ON computed_trait_backfills (status);
