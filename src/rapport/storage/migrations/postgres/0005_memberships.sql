-- The segment membership index (rapport.storage.membership_index), kept by
-- its own consumer of the event log ("memberships" in consumer_offsets).
-- Ids are COLLATE "C" so that paging by profile id follows the primary key
-- in byte order, as on SQLite, whatever the database's default collation.

-- Who is in each segment now; the primary key pages a segment's members.
CREATE TABLE segment_members (
    workspace_id text NOT NULL,
    segment_id text COLLATE "C" NOT NULL,
    profile_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    entered_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, segment_id, profile_id)
);

-- Member count per segment, moved in the same transaction as the members,
-- so a size is one row read however large the segment.
CREATE TABLE segment_sizes (
    workspace_id text NOT NULL,
    segment_id text COLLATE "C" NOT NULL,
    members bigint NOT NULL,
    PRIMARY KEY (workspace_id, segment_id)
);

-- One row per Segment Entered / Segment Exited event, keyed by its log
-- offset so a replayed batch inserts nothing twice.
CREATE TABLE segment_history (
    workspace_id text NOT NULL,
    log_offset bigint NOT NULL,
    profile_id text NOT NULL,
    segment_id text NOT NULL,
    version bigint NOT NULL,
    entered boolean NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, log_offset)
);
CREATE INDEX segment_history_by_profile ON segment_history (workspace_id, profile_id, log_offset DESC);
