-- Scheduled internal events: segment timers and the outbox of the events a
-- processing step emits (rapport.core.model.ScheduledEvent). One row per
-- (workspace, key); writing a key again replaces its row. The relay
-- (rapport.runtime.relay) appends due rows to the event log, then deletes them.
-- Rows due at the same instant go out in the order they were written:
-- (origin_offset, origin_index) is the writing batch's offset and the row's
-- place in it.
CREATE TABLE scheduled_events (
    workspace_id TEXT NOT NULL,
    schedule_key TEXT NOT NULL,
    due_at INTEGER NOT NULL, -- microseconds since the epoch
    origin_offset INTEGER NOT NULL,
    origin_index INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    event BLOB NOT NULL, -- the Event, msgspec JSON
    PRIMARY KEY (workspace_id, schedule_key)
);

CREATE INDEX scheduled_events_due ON scheduled_events (due_at, origin_offset, origin_index);
