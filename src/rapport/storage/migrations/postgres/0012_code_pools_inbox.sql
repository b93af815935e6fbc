-- Code pools (rapport.core.code_pools): unique promo codes, each claimed by at
-- most one profile, and at most one code per profile per pool.
CREATE TABLE code_pools (
    workspace_id text NOT NULL,
    pool_id text NOT NULL,
    description text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, pool_id)
);
CREATE TABLE pool_codes (
    workspace_id text NOT NULL,
    pool_id text NOT NULL,
    code text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY, -- upload order: handed out oldest first
    added_at timestamptz NOT NULL,
    profile_id text, -- NULL while available
    message_key text, -- the message that claimed it
    claimed_at timestamptz,
    PRIMARY KEY (workspace_id, pool_id, code),
    FOREIGN KEY (workspace_id, pool_id) REFERENCES code_pools (workspace_id, pool_id)
);
-- One code per profile per pool: two concurrent first claims of one profile
-- cannot both commit (the second gets a unique violation and reads the first).
CREATE UNIQUE INDEX pool_codes_by_profile ON pool_codes (workspace_id, pool_id, profile_id)
    WHERE profile_id IS NOT NULL;
CREATE INDEX pool_codes_available ON pool_codes (workspace_id, pool_id, seq)
    WHERE profile_id IS NULL;

-- In-app inboxes (rapport.storage.inbox): what the in_app channel delivered.
CREATE TABLE inbox_messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text NOT NULL,
    message_id text NOT NULL,
    profile_id text NOT NULL,
    read_at timestamptz,
    -- The InboxMessage without seq and read_at, msgspec JSON (bytea: jsonb
    -- refuses \u0000 inside strings).
    doc bytea NOT NULL,
    UNIQUE (workspace_id, message_id)
);
CREATE INDEX inbox_messages_by_profile ON inbox_messages (workspace_id, profile_id, seq);
