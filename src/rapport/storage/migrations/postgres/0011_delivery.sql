-- Delivery state of outbox messages (rapport.storage.outbox): what the
-- sender claimed, tried, sent or gave up on. ``next_attempt_at`` is when a
-- pending message may be claimed (the gate's not_before, a retry, a claim's
-- lease); ``profile_id`` lets "what did we send her?" read one profile's rows.
ALTER TABLE outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE outbox ADD COLUMN provider_message_id text;
ALTER TABLE outbox ADD COLUMN sent_at timestamptz;
ALTER TABLE outbox ADD COLUMN template_version integer;
ALTER TABLE outbox ADD COLUMN profile_id text;

-- Rows written before: due at once, profile read from the stored document
-- (json, not jsonb: the document may hold \u0000).
UPDATE outbox SET next_attempt_at = to_timestamp(0),
    profile_id = convert_from(doc, 'UTF8')::json->>'profile_id';

CREATE INDEX outbox_due ON outbox (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (workspace_id, seq) WHERE status = 'dead';
CREATE INDEX outbox_profile ON outbox (workspace_id, profile_id, seq);
