-- Segment backfill jobs (see rapport.core.backfill): one row per
-- (workspace, segment), the job of the newest version. A write of an older
-- version's progress never replaces a newer version's job.
CREATE TABLE segment_backfills (
    workspace_id text NOT NULL,
    segment_id text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    doc bytea NOT NULL, -- the BackfillJob, msgspec JSON
    PRIMARY KEY (workspace_id, segment_id)
);

CREATE INDEX segment_backfills_status ON segment_backfills (status);
