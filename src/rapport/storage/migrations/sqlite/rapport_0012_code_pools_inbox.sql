-- Code pools (rapport.core.code_pools): unique promo codes, each claimed by at
-- most one profile, and at most one code per profile per pool.
CREATE TABLE code_pools (
    workspace_id TEXT NOT NULL,
    pool_id TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, pool_id)
);
CREATE TABLE pool_codes (
    workspace_id TEXT NOT NULL,
    pool_id TEXT NOT NULL,
    code TEXT NOT NULL,
    seq INTEGER NOT NULL, -- upload order: codes are handed out oldest first
    added_at INTEGER NOT NULL,
    profile_id TEXT, -- NULL while available
    message_key TEXT, -- the message that claimed it
    claimed_at INTEGER,
    PRIMARY KEY (workspace_id, pool_id, code)
);
-- One code per profile per pool, whatever a caller does.
CREATE UNIQUE INDEX pool_codes_by_profile ON pool_codes (workspace_id, pool_id, profile_id)
    WHERE profile_id IS NOT NULL;
CREATE INDEX pool_codes_available ON pool_codes (workspace_id, pool_id, seq)
    WHERE profile_id IS NULL;

-- In-app inboxes (rapport.storage.inbox): what the in_app channel delivered.
CREATE TABLE inbox_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    read_at INTEGER,
    doc BLOB NOT NULL, -- the InboxMessage without seq and read_at, msgspec JSON
    UNIQUE (workspace_id, message_id)
);
CREATE INDEX inbox_messages_by_profile ON inbox_messages (workspace_id, profile_id, seq);
