-- Scheduled internal events: segment timers and the outbox of the events a
-- processing step emits (rapport.core.model.ScheduledEvent). One row per
-- (workspace, key); writing a key again replaces its row. The relay
-- (rapport.runtime.relay) appends due rows to the event log, then deletes them.
-- Rows due at the same instant go out in the order they were written:
-- (origin_offset, origin_index) is the writing batch's offset and the row's
-- place in it.
CREATE TABLE scheduled_events (
    workspace_id text NOT NULL,
    schedule_key text NOT NULL,
    due_at timestamptz NOT NULL,
    origin_offset bigint NOT NULL,
    origin_index integer NOT NULL,
    message_id text NOT NULL,
    -- The Event as msgspec JSON. bytea, not jsonb: jsonb refuses \u0000
    -- inside strings, which an event property may hold.
    event bytea NOT NULL,
    PRIMARY KEY (workspace_id, schedule_key)
);

CREATE INDEX scheduled_events_due ON scheduled_events (due_at, origin_offset, origin_index);
