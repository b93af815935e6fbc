-- Business-event fan-out (rapport.runtime.business_events) asks "who sent
-- event NAME since T": by name and time, paged by (occurred_at, log_offset).
CREATE INDEX profile_events_by_name ON profile_events (workspace_id, name, occurred_at, log_offset);
