-- The outbox of the events a processing step emits, due at once: the rows of
-- scheduled_events (0003) whose key is 'outbox:' followed by their event's
-- message id (Segment Entered / Exited, backfill changes). Such a key names
-- one event, so nothing ever moves or replaces its row: it is written once,
-- delivered by the relay, deleted. Here it costs one append at the end of
-- one B-tree instead of an insert into three (the table, the key and the
-- due index) and as many deletes, and the relay deletes a range of ids.
--
-- Rows are stored in delivery order: a row goes here only if its
-- (due_at, origin_offset, origin_index) is not before the last row's, else
-- to scheduled_events; the relay merges the two (rapport.storage.sqlite_scheduled).
-- AUTOINCREMENT: an id is never reused, so a row read by the relay is still
-- the same row when it deletes that id.
CREATE TABLE scheduled_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    due_at INTEGER NOT NULL, -- microseconds since the epoch
    origin_offset INTEGER NOT NULL,
    origin_index INTEGER NOT NULL,
    message_id TEXT NOT NULL, -- the key is 'outbox:' || message_id
    received_at INTEGER NOT NULL, -- the event's, for the log's dedup index
    event BLOB NOT NULL -- the Event, msgspec JSON, appended to the log as it is
);
