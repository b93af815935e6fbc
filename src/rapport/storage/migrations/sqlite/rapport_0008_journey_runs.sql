-- Journey runs (rapport.storage.journey_runs): instances, per-step counters
-- and the outbox, all written by the processing commit of the step that
-- decided them.

-- One row per instance, upserted whole. ``live`` is 1 for the statuses that
-- hold a (journey, profile, key) slot; ``ended_at`` orders ended ones so the
-- latest per slot (which re-entry reads) is found.
CREATE TABLE journey_instances (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    journey_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    profile_id TEXT NOT NULL,
    correlation_key TEXT,
    status TEXT NOT NULL,
    live INTEGER NOT NULL,
    ended_at INTEGER, -- microseconds since the epoch
    doc BLOB NOT NULL, -- the JourneyInstance, msgspec JSON (with its trace)
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;

CREATE INDEX journey_instances_profile ON journey_instances (workspace_id, profile_id);
CREATE INDEX journey_instances_journey ON journey_instances (workspace_id, journey_id, id);
CREATE INDEX journey_instances_status
    ON journey_instances (workspace_id, journey_id, status, id);

-- Running counters: one row per (journey, version, step, metric).
CREATE TABLE journey_metrics (
    workspace_id TEXT NOT NULL,
    journey_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, journey_id, version, step_id, metric)
) WITHOUT ROWID;

-- The (consumer, offset) of every batch whose increments were added: a
-- replayed batch finds its marker and adds nothing.
CREATE TABLE journey_metric_batches (
    consumer TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, log_offset)
) WITHOUT ROWID;

-- Outbound messages, one per (workspace, idempotency key): inserted pending
-- if the key is new, then marked sent or failed by the channels. ``seq``
-- orders pending messages for senders.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER,
    error TEXT,
    doc BLOB NOT NULL, -- the OutboxMessage as written (pending), msgspec JSON
    UNIQUE (workspace_id, idempotency_key)
);

CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
