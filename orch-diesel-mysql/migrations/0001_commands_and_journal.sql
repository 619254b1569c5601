-- Commands: one row per command, its lifecycle state, its lease and its result.
-- Times are microseconds since the Unix epoch, written by the caller's injected clock.
-- Ids and lease tokens are hyphenated UUIDs in ASCII; text compares byte for byte
-- (utf8mb4_bin), as in the other backends.
--
-- MySQL has no partial indexes, so each index leads with the column the other
-- backends filter on. Indexes are declared inside CREATE TABLE: one DDL statement per
-- table, each idempotent on its own (DDL commits implicitly, so nothing can wrap them
-- in a transaction). Statements are separated by a semicolon at the end of a line.
CREATE TABLE IF NOT EXISTS `{prefix}commands` (
    id               CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name             VARCHAR(255) NOT NULL,
    target           VARCHAR(255) NOT NULL,
    state            VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    input            LONGTEXT NOT NULL,
    output           LONGTEXT NULL,
    error_kind       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    error            LONGTEXT NULL,
    attempts         INT NOT NULL DEFAULT 0,
    max_attempts     INT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    retry_policy     TEXT NOT NULL,
    scheduled_at     BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT NULL,
    finished_at      BIGINT NULL,
    lease_token      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    lease_expires_at BIGINT NULL,
    worker           VARCHAR(255) NULL,
    cancel_requested TINYINT NOT NULL DEFAULT 0,
    follow_ups_due   TINYINT NOT NULL DEFAULT 0,
    parent_id        CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    correlation_id   VARCHAR(255) NOT NULL,
    PRIMARY KEY (id),
    -- The claim path for one name: due pending commands of one target and name,
    -- oldest due first.
    KEY commands_claim (state, target, name, scheduled_at, id),
    -- The claim path for several names: due pending commands of one target, oldest due
    -- first, the name checked in the index. Without it MySQL would have to sort all
    -- due commands of those names, locking every one of them for the claim's duration
    -- so that concurrent claims find nothing.
    KEY commands_due (state, target, scheduled_at, id, name),
    -- The rescuer: running commands by lease expiry.
    KEY commands_lease (state, lease_expires_at),
    -- Counts and listings by state.
    KEY commands_state (state, name, target),
    -- Commands finished outside a worker whose follow-ups are still to be pushed.
    KEY commands_follow_ups (follow_ups_due, name),
    KEY commands_parent (parent_id),
    KEY commands_correlation (correlation_id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;

-- The journal: append-only, one row per thing that happened to a command.
CREATE TABLE IF NOT EXISTS `{prefix}journal` (
    seq        BIGINT NOT NULL AUTO_INCREMENT,
    command_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    at         BIGINT NOT NULL,
    kind       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempt    INT NOT NULL,
    worker     VARCHAR(255) NULL,
    message    LONGTEXT NULL,
    PRIMARY KEY (seq),
    KEY journal_command (command_id, seq)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
