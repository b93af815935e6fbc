-- The segment membership index (rapport.storage.membership_index), kept by
-- its own consumer of the event log ("memberships" in consumer_offsets).

-- Who is in each segment now. The primary key orders a segment's members by
-- profile id, which is how they are paged.
CREATE TABLE segment_members (
    workspace_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    entered_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, segment_id, profile_id)
) WITHOUT ROWID;

-- Member count per segment, moved in the same transaction as the members,
-- so a size is one row read however large the segment.
CREATE TABLE segment_sizes (
    workspace_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    members INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, segment_id)
) WITHOUT ROWID;

-- One row per Segment Entered / Segment Exited event, keyed by its log
-- offset so a replayed batch inserts nothing twice.
CREATE TABLE segment_history (
    workspace_id TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    profile_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    entered INTEGER NOT NULL, -- 1 entered, 0 exited
    at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, log_offset)
);

CREATE INDEX segment_history_by_profile ON segment_history (workspace_id, profile_id, log_offset);
