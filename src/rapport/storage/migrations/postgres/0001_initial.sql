-- Rapport on PostgreSQL: event log, dedup, workspaces and keys, rejections,
-- identity graph, profiles and timelines, consumer offsets.
-- Runs with search_path set to the target schema; names are unqualified.
--
-- The only foreign key is api_keys -> workspaces (a key outside a workspace
-- is meaningless). Hot-path tables carry their workspace id without one, so
-- appends and processing commits pay for no extra index probes.

-- == event log ==============================================================

-- The last offset handed out. Appenders take this row's lock for the rest of
-- their transaction (see event_log_append), which is what makes offsets
-- become visible in commit order.
CREATE TABLE event_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_offset bigint NOT NULL
);
INSERT INTO event_log_head (singleton, last_offset) VALUES (true, 0);

CREATE TABLE event_log (
    log_offset bigint PRIMARY KEY,
    workspace_id text NOT NULL,
    message_id text NOT NULL,
    -- The Event as msgspec JSON. bytea, not jsonb: the log is only ever read
    -- back whole by processors, so the bytes go in and out untouched.
    body bytea NOT NULL
);

-- (workspace_id, message_id) seen within the dedup window.
CREATE TABLE event_dedup (
    workspace_id text NOT NULL,
    message_id text NOT NULL,
    first_seen timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, message_id)
);
-- first_seen follows arrival order, so a BRIN index makes pruning cheap
-- without adding a btree insert to every append.
CREATE INDEX event_dedup_first_seen ON event_dedup USING brin (first_seen);

-- Append events whose (workspace, message id) pairs are distinct within the
-- call; returns the 1-based positions of the events that were new, ascending.
--
-- Offsets must become visible in commit order, or a reader at offset N could
-- see N+2 committed while N+1 is still in flight and skip it forever. So the
-- offsets come from the single event_log_head row, updated in the appending
-- transaction: its row lock is held until commit, hence the next appender
-- gets its offsets only after this one is committed and visible. Commits of
-- appends are serialised by this; with 100-event batches that costs one
-- commit per hundred events, which the throughput measurements accept.
--
-- A function (one round trip) rather than a multi-CTE statement because the
-- steps must run in a fixed order: claim message ids first (this may wait on
-- a concurrent append of the same id), and take the head row lock last, so a
-- transaction holding the head never waits for anything.
CREATE FUNCTION event_log_append(
    p_workspace_ids text[],
    p_message_ids text[],
    p_received_ats timestamptz[],
    p_bodies bytea[]
) RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    fresh integer[];
    first_offset bigint;
BEGIN
    -- Claim ids in key order: appends that share ids then lock them in the
    -- same order and cannot deadlock each other.
    WITH claimed AS (
        INSERT INTO event_dedup (workspace_id, message_id, first_seen)
        SELECT u.w, u.m, u.r
        FROM unnest(p_workspace_ids, p_message_ids, p_received_ats) AS u(w, m, r)
        ORDER BY u.w, u.m
        ON CONFLICT DO NOTHING
        RETURNING workspace_id, message_id
    )
    SELECT array_agg(u.pos ORDER BY u.pos) INTO fresh
    FROM unnest(p_workspace_ids, p_message_ids) WITH ORDINALITY AS u(w, m, pos)
    JOIN claimed AS c ON c.workspace_id = u.w AND c.message_id = u.m;

    IF fresh IS NULL THEN
        RETURN '{}';
    END IF;

    UPDATE event_log_head
    SET last_offset = last_offset + cardinality(fresh)
    RETURNING last_offset - cardinality(fresh) INTO first_offset;

    INSERT INTO event_log (log_offset, workspace_id, message_id, body)
    SELECT first_offset + f.k, p_workspace_ids[f.pos], p_message_ids[f.pos], p_bodies[f.pos]
    FROM unnest(fresh) WITH ORDINALITY AS f(pos, k);

    RETURN fresh;
END
$$;

-- == workspaces and keys ====================================================

CREATE TABLE workspaces (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    kind text NOT NULL CHECK (kind IN ('write', 'secret')),
    key_hash text NOT NULL UNIQUE,
    name text,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- == rejections =============================================================

CREATE TABLE rejections (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text NOT NULL,
    received_at timestamptz NOT NULL,
    code text NOT NULL,
    message text NOT NULL,
    field text,
    item_index integer,
    message_id text,
    source text,
    payload text NOT NULL
);
CREATE INDEX rejections_newest_first ON rejections (workspace_id, id DESC);

-- == identity graph and profiles ============================================

CREATE TABLE identifiers (
    workspace_id text NOT NULL,
    id_type text NOT NULL,
    id_value text NOT NULL,
    profile_id text NOT NULL,
    PRIMARY KEY (workspace_id, id_type, id_value)
);
CREATE INDEX identifiers_by_profile ON identifiers (workspace_id, profile_id);

CREATE TABLE profiles (
    workspace_id text NOT NULL,
    id text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- The whole Profile as JSON. jsonb rather than opaque bytes so operators
    -- and marketers can query traits ad hoc (doc->'traits'->'plan'->>'value')
    -- and add expression or GIN indexes later without a data migration.
    doc jsonb NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

-- One row per merged-away profile: the redirect that keeps the loser's id
-- resolvable, and the record of why it happened.
CREATE TABLE profile_merges (
    workspace_id text NOT NULL,
    loser text NOT NULL,
    winner text NOT NULL,
    merged_at timestamptz NOT NULL,
    reason text NOT NULL,
    message_id text,
    -- Recording order, to list merges with equal merged_at stably.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (workspace_id, loser)
);
CREATE INDEX profile_merges_by_winner ON profile_merges (workspace_id, winner, merged_at, seq);

-- A profile's timeline. Keyed by the log offset so replaying a processing
-- batch inserts nothing twice.
CREATE TABLE profile_events (
    workspace_id text NOT NULL,
    log_offset bigint NOT NULL,
    profile_id text NOT NULL,
    message_id text NOT NULL,
    type text NOT NULL,
    name text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (workspace_id, log_offset)
);
CREATE INDEX profile_events_timeline ON profile_events (workspace_id, profile_id, log_offset DESC);

-- == processing =============================================================

CREATE TABLE consumer_offsets (
    consumer text PRIMARY KEY,
    log_offset bigint NOT NULL
);
