-- Commands: one row per command, its lifecycle state, its lease and its result.
-- Times are microseconds since the Unix epoch, written by the caller's injected clock.
CREATE TABLE {prefix}commands (
    id               TEXT    PRIMARY KEY NOT NULL,
    name             TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    output           TEXT,
    error_kind       TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    retry_policy     TEXT    NOT NULL,
    scheduled_at     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    worker           TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    follow_ups_due   INTEGER NOT NULL DEFAULT 0,
    parent_id        TEXT,
    correlation_id   TEXT    NOT NULL
);

-- The claim path: due pending commands of one target and name, oldest due first.
CREATE INDEX {prefix}commands_claim ON {prefix}commands (target, name, scheduled_at, id) WHERE state = 'pending';
-- The rescuer: running commands by lease expiry.
CREATE INDEX {prefix}commands_lease ON {prefix}commands (lease_expires_at) WHERE state = 'running';
-- Counts and listings by state.
CREATE INDEX {prefix}commands_state ON {prefix}commands (state, name, target);
-- Commands finished outside a worker whose follow-ups are still to be pushed.
CREATE INDEX {prefix}commands_follow_ups ON {prefix}commands (name) WHERE follow_ups_due = 1;
CREATE INDEX {prefix}commands_parent ON {prefix}commands (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX {prefix}commands_correlation ON {prefix}commands (correlation_id);

-- The journal: append-only, one row per thing that happened to a command.
CREATE TABLE {prefix}journal (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT,
    message    TEXT
);
CREATE INDEX {prefix}journal_command ON {prefix}journal (command_id, seq);
