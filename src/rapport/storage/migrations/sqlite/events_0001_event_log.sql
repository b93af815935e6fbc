-- events.db: the event log and its dedup table, kept apart from rapport.db so
-- ingest appends and processing commits each have their own writer.
-- Datetimes are INTEGER microseconds since the Unix epoch (UTC): compact,
-- and they compare correctly whatever offset the original value carried.

-- AUTOINCREMENT: offsets are never reused, even if the newest entries are
-- ever deleted, so a consumer's committed offset always stays meaningful.
CREATE TABLE event_log (
    log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL -- the Event, msgspec JSON
);

-- The persistent dedup index. It trails the log: ids appended since it was
-- last brought up to date are held in memory and written in bulk (random
-- ids make row-at-a-time inserts cost a page write each), and rebuilt from
-- the log after a restart.
CREATE TABLE event_dedup (
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    first_seen INTEGER NOT NULL, -- received_at of the first copy
    PRIMARY KEY (workspace_id, message_id)
) WITHOUT ROWID;

-- No index on first_seen: flushes insert ids in key order, and a second,
-- time-ordered index would turn each of those into a random insert (it cost
-- three times the table itself). prune_dedup walks the key order instead.

-- One row: how far the dedup index has caught up with the log, and the
-- newest prune cutoff (ids first seen before it are forgotten on rebuild too).
CREATE TABLE event_dedup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through INTEGER NOT NULL, -- log offset
    pruned_before INTEGER NOT NULL
);

INSERT INTO event_dedup_state (id, indexed_through, pruned_before)
VALUES (1, 0, -9223372036854775807);
