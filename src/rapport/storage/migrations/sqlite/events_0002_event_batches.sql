-- One row per append instead of one per event.
--
-- An append (one ingest request, one processing step's internal events)
-- becomes one row holding its events as one JSON array, at most 100 of them
-- (longer appends take several rows). Per event, a row of its own cost a
-- B-tree cell, a record and four bound values; one row per batch makes the
-- insert about five times cheaper and the log smaller, and readers decode
-- one array per row. Offsets stay per event: the row's key is the offset of
-- its last event, and the events before it take the offsets just below.
--
-- No AUTOINCREMENT: the event log assigns each row's offset itself (the
-- newest offset + the row's event count) inside the write transaction, and
-- rows are never deleted, so an offset is never reused.
--
-- event_log (0001) keeps the entries appended before this migration, one per
-- row, read-only from now on: offsets 1 to its max(log_offset), after which
-- event_batch continues. Nothing is copied, so a big log opens at once.
CREATE TABLE event_batch (
    last_offset INTEGER PRIMARY KEY,
    events INTEGER NOT NULL CHECK (events > 0),
    body BLOB NOT NULL -- JSON array of the Events, in offset order
);
