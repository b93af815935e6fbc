-- Journey runs (rapport.storage.journey_runs): instances, per-step counters
-- and the outbox, all written by the processing commit of the step that
-- decided them. Documents are bytea, not jsonb: jsonb refuses \u0000 inside
-- strings, which variables, data and traces may hold.

-- One row per instance, upserted whole. ``live`` is true for the statuses
-- that hold a (journey, profile, key) slot; ``ended_at`` orders ended ones
-- so the latest per slot (which re-entry reads) is found.
CREATE TABLE journey_instances (
    workspace_id text NOT NULL,
    id text NOT NULL,
    journey_id text NOT NULL,
    version integer NOT NULL,
    profile_id text NOT NULL,
    correlation_key text,
    status text NOT NULL,
    live boolean NOT NULL,
    ended_at timestamptz,
    doc bytea NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE INDEX journey_instances_profile ON journey_instances (workspace_id, profile_id);
CREATE INDEX journey_instances_journey ON journey_instances (workspace_id, journey_id, id);
CREATE INDEX journey_instances_status
    ON journey_instances (workspace_id, journey_id, status, id);

-- Running counters: one row per (journey, version, step, metric).
CREATE TABLE journey_metrics (
    workspace_id text NOT NULL,
    journey_id text NOT NULL,
    version integer NOT NULL,
    step_id text NOT NULL,
    metric text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (workspace_id, journey_id, version, step_id, metric)
);

-- The (consumer, offset) of every batch whose increments were added: a
-- replayed batch finds its marker and adds nothing.
CREATE TABLE journey_metric_batches (
    consumer text NOT NULL,
    log_offset bigint NOT NULL,
    PRIMARY KEY (consumer, log_offset)
);

-- Outbound messages, one per (workspace, idempotency key): inserted pending
-- if the key is new, then marked sent or failed by the channels. ``seq``
-- orders pending messages for senders.
CREATE TABLE outbox (
    seq bigserial PRIMARY KEY,
    workspace_id text NOT NULL,
    idempotency_key text NOT NULL,
    status text NOT NULL,
    updated_at timestamptz,
    error text,
    doc bytea NOT NULL,
    UNIQUE (workspace_id, idempotency_key)
);

CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
