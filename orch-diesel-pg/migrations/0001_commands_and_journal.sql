-- Commands: one row per command, its lifecycle state, its lease and its result.
-- Times are microseconds since the Unix epoch, written by the caller's injected clock.
-- Names compare byte-wise (COLLATE "C"), so orderings match every other backend.
-- Every row is updated several times (claim, heartbeats, completion): a lower
-- fillfactor leaves room for the new row versions on the same page.
CREATE TABLE {prefix}commands (
    id               UUID     PRIMARY KEY NOT NULL,
    name             TEXT     COLLATE "C" NOT NULL,
    target           TEXT     COLLATE "C" NOT NULL,
    state            TEXT     COLLATE "C" NOT NULL,
    input            TEXT     NOT NULL,
    output           TEXT,
    error_kind       TEXT,
    error            TEXT,
    attempts         INTEGER  NOT NULL DEFAULT 0,
    max_attempts     INTEGER  NOT NULL,
    timeout_ms       BIGINT   NOT NULL,
    retry_policy     TEXT     NOT NULL,
    scheduled_at     BIGINT   NOT NULL,
    created_at       BIGINT   NOT NULL,
    updated_at       BIGINT   NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    lease_token      UUID,
    lease_expires_at BIGINT,
    worker           TEXT,
    cancel_requested BOOLEAN  NOT NULL DEFAULT FALSE,
    follow_ups_due   BOOLEAN  NOT NULL DEFAULT FALSE,
    parent_id        UUID,
    correlation_id   TEXT     COLLATE "C" NOT NULL
) WITH (fillfactor = 80);

-- The claim path: due pending commands of one target and name, oldest due first.
CREATE INDEX {prefix}commands_claim ON {prefix}commands (target, name, scheduled_at, id) WHERE state = 'pending';
-- The rescuer: running commands by lease expiry.
CREATE INDEX {prefix}commands_lease ON {prefix}commands (lease_expires_at) WHERE state = 'running';
-- Counts and listings by state.
CREATE INDEX {prefix}commands_state ON {prefix}commands (state, name, target);
-- Commands finished outside a worker whose follow-ups are still to be pushed.
CREATE INDEX {prefix}commands_follow_ups ON {prefix}commands (name, id) WHERE follow_ups_due;
CREATE INDEX {prefix}commands_parent ON {prefix}commands (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX {prefix}commands_correlation ON {prefix}commands (correlation_id);

-- The journal: append-only, one row per thing that happened to a command.
CREATE TABLE {prefix}journal (
    seq        BIGSERIAL PRIMARY KEY,
    command_id UUID      NOT NULL,
    at         BIGINT    NOT NULL,
    kind       TEXT      NOT NULL,
    attempt    INTEGER   NOT NULL,
    worker     TEXT,
    message    TEXT
);
CREATE INDEX {prefix}journal_command ON {prefix}journal (command_id, seq);
