-- rapport.db: everything except the event log.
-- Datetimes are INTEGER microseconds since the Unix epoch (UTC). Profile
-- documents keep their own datetimes, with offsets, inside the JSON.

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    kind TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    name TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id);

CREATE TABLE rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    field TEXT,
    batch_index INTEGER,
    message_id TEXT,
    source TEXT,
    payload TEXT NOT NULL
);

CREATE INDEX rejections_workspace_id ON rejections (workspace_id, id);

CREATE TABLE identifiers (
    workspace_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    PRIMARY KEY (workspace_id, type, value)
) WITHOUT ROWID;

CREATE INDEX identifiers_profile ON identifiers (workspace_id, profile_id);

CREATE TABLE profiles (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL, -- the Profile, msgspec JSON
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

-- One row per merged-away profile: it doubles as the merge history
-- (list_merges by winner) and the redirect that resolve_profile_id follows.
-- A rowid table on purpose: the rowid orders merges recorded at the same time.
CREATE TABLE profile_merges (
    workspace_id TEXT NOT NULL,
    loser TEXT NOT NULL,
    winner TEXT NOT NULL,
    merged_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    message_id TEXT,
    PRIMARY KEY (workspace_id, loser)
);

CREATE INDEX profile_merges_winner ON profile_merges (workspace_id, winner, merged_at);

-- Keyed by the log offset, so replaying a processing batch inserts nothing twice.
CREATE TABLE profile_events (
    workspace_id TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    profile_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT,
    timestamp INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL, -- the Event, msgspec JSON
    PRIMARY KEY (workspace_id, log_offset)
);

CREATE INDEX profile_events_timeline ON profile_events (workspace_id, profile_id, log_offset);

CREATE TABLE consumer_offsets (
    consumer TEXT PRIMARY KEY,
    log_offset INTEGER NOT NULL
);
