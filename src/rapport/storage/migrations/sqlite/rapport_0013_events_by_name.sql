-- Business-event fan-out (rapport.runtime.business_events) asks "who sent
-- event NAME since T": by name and time, paged by (timestamp, log_offset).
CREATE INDEX profile_events_by_name ON profile_events (workspace_id, name, timestamp, log_offset);
